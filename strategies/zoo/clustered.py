"""Clustered aggregation of the shared layers by update similarity (MaT-FL style).

Cai et al., "Many-Task Federated Learning: A New Problem Setting and a Simple
Baseline" (MaT-FL), CVPR Workshops 2023, group clients dynamically by the
similarity of their updates and aggregate within groups only, so tasks whose
updates conflict stop dragging the shared encoder in opposite directions (as in
clustered FL, Sattler et al., IEEE TNNLS 2021).

Each round, for every valid reply ``i`` the update ``u_i`` is its shared arrays
minus the shared arrays the node was sent (flattened over all floating entries).
Clients are grouped by average-linkage agglomerative clustering on the cosine
distance ``1 - cos(u_i, u_j)``: with ``num_clusters`` into that many groups,
otherwise by cutting the tree at ``max_distance`` (default 1.0: a group's members
do not conflict on average). Each group's model is the ``num-examples``-weighted
mean of its members' shared arrays, and each member receives its group's model
from then on; a node that has not trained yet receives the global model. The
global model returned to Flower (what ``fedmtl`` saves and reports as global) is
the weighted mean of all valid replies, i.e. FedAvg's.

Groups are remembered by client id (the ``"client"`` record of each reply, and
``client_of`` of the grid ``ScopedStrategy`` hands in), not by node id, which
changes when a federation restarts: a resumed run keeps its groups.

Clustering ignores tasks: a client holding several tasks sends one shared
update and joins one group, like any other client (its task-scope arrays are
still split and averaged per task by ``ScopedStrategy``).

Each round's train metrics (the run's ``strategy`` metrics in ``metrics.jsonl``)
hold ``num-clusters`` and the membership: ``cluster-of/<client-id>`` is the
group (0, 1, ... in order of the first member by client id) the client joined
this round, so which tasks end up together can be read beside the client rows.

Wire keys: reads the shared ``"arrays"``, ``"metrics"`` (``num-examples``) and
the ``"client"`` record (``client-id``);
sends FedAvg's messages with ``"arrays"`` replaced per node by its group's model.
Client side: nothing beyond plain training. Task-scope arrays (if the run has
any) are still averaged per task by ``ScopedStrategy``; clustering acts on the
shared scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from fedmtl.records import (
    ClientInfo,
    NDArrays,
    from_record,
    reply_examples,
    to_record,
)
from strategies.aggregation import weighted_average
from strategies.registry import register


def cosine_distances(updates: Sequence[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
    """Pairwise ``1 - cos`` of flat updates; a zero update is at distance 1 from all others."""
    stacked = np.stack([np.asarray(u, dtype=np.float64) for u in updates])
    norms = np.linalg.norm(stacked, axis=1)
    unit = stacked / np.where(norms > 0, norms, 1.0)[:, None]
    distances = 1.0 - unit @ unit.T
    zero = norms == 0
    distances[zero, :] = distances[:, zero] = 1.0
    np.fill_diagonal(distances, 0.0)
    return np.clip(distances, 0.0, 2.0)


def cluster_updates(
    updates: Sequence[npt.NDArray[np.float64]],
    num_clusters: int | None = None,
    max_distance: float = 1.0,
) -> list[int]:
    """Group labels (0, 1, ... in order of first appearance) of average-linkage clustering.

    Parameters
    ----------
    updates : sequence of flat arrays
        One update per client.
    num_clusters : int, optional
        Cut into at most this many groups; otherwise cut at ``max_distance``.
    max_distance : float
        Largest average cosine distance inside a group (in [0, 2]).
    """
    if len(updates) < 2:
        return [0] * len(updates)
    condensed = squareform(cosine_distances(updates), checks=False)
    tree = linkage(condensed, method="average")
    if num_clusters is not None:
        raw = fcluster(tree, t=num_clusters, criterion="maxclust")
    else:
        raw = fcluster(tree, t=max_distance, criterion="distance")
    order: dict[int, int] = {}
    return [order.setdefault(int(label), len(order)) for label in raw]


def flat_update(arrays: NDArrays, reference: NDArrays) -> npt.NDArray[np.float64]:
    """``arrays - reference`` over the floating entries, flattened in key order."""
    parts = [
        (
            np.asarray(arrays[k], dtype=np.float64) - np.asarray(reference[k], dtype=np.float64)
        ).ravel()
        for k in sorted(reference)
        if np.issubdtype(np.asarray(reference[k]).dtype, np.floating)
    ]
    return np.concatenate(parts) if parts else np.zeros(0)


def _client_id(reply: Message) -> int:
    """The replying client's id (its ``"client"`` record), else its node id."""
    try:
        return ClientInfo.from_content(reply.content).client_id
    except (KeyError, TypeError, ValueError):
        return int(reply.metadata.src_node_id)


#: Train-metric key prefix of a client's group this round: ``cluster-of/<client-id>``.
CLUSTER_OF = "cluster-of"


def membership_metrics(clients: Sequence[int], labels: Sequence[int]) -> dict[str, int]:
    """``{"cluster-of/<client-id>": label}`` of one round's clustering."""
    return {f"{CLUSTER_OF}/{c}": int(label) for c, label in zip(clients, labels, strict=True)}


@register("clustered")
class ClusteredFedAvg(FedAvg):
    """FedAvg within groups of clients whose shared-scope updates agree (module docstring).

    Parameters
    ----------
    num_clusters : int, optional
        Fixed number of groups per round; by default groups are cut at ``max_distance``.
    max_distance : float
        Average-linkage cut on the cosine distance of updates (0 < d <= 2).
    **kwargs
        FedAvg's sampling arguments.
    """

    conformance_traits = ("weighted-mean",)

    def __init__(
        self, num_clusters: int | None = None, max_distance: float = 1.0, **kwargs: Any
    ) -> None:
        if num_clusters is not None and num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
        if not 0 < max_distance <= 2:
            raise ValueError(f"max_distance must be in (0, 2], got {max_distance}")
        super().__init__(**kwargs)
        self.num_clusters = num_clusters
        self.max_distance = float(max_distance)
        self.global_arrays: NDArrays = {}
        self.group_arrays: dict[int, NDArrays] = {}  # group id -> its shared arrays
        self.client_group: dict[int, int] = {}  # client id -> group id it last joined
        self.next_group = 0
        self.last_groups: dict[int, list[int]] = {}  # group id -> member clients, last round

    # --------------------------------------------------------------- configure
    def _arrays_for(self, client: int) -> NDArrays:
        return self.group_arrays.get(self.client_group.get(client, -1), self.global_arrays)

    def _per_node(self, messages: Iterable[Message], grid: Grid) -> list[Message]:
        client_of = getattr(grid, "client_of", None)
        out = []
        for message in messages:
            node = message.metadata.dst_node_id
            client = client_of(node) if client_of is not None else None
            content = RecordDict(dict(message.content.items()))
            key = node if client is None else client
            content[self.arrayrecord_key] = to_record(self._arrays_for(key))
            out.append(
                Message(
                    content=content,
                    dst_node_id=node,
                    message_type=message.metadata.message_type,
                )
            )
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample as FedAvg; send each node its group's shared arrays."""
        self.global_arrays = from_record(arrays)
        return self._per_node(super().configure_train(server_round, arrays, config, grid), grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample as FedAvg; evaluate each node on its group's shared arrays."""
        self.global_arrays = from_record(arrays)
        return self._per_node(super().configure_evaluate(server_round, arrays, config, grid), grid)

    # --------------------------------------------------------------- aggregate
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Cluster the valid replies by update direction; average within and over groups."""
        replies = list(replies)
        valid = [r for r in replies if not r.has_error()]
        if not valid:
            return None, None
        clients = [_client_id(r) for r in valid]
        arrays = [from_record(r.content.array_records[self.arrayrecord_key]) for r in valid]
        weights = [reply_examples(r.content) for r in valid]
        reference = [self._arrays_for(c) or arrays[i] for i, c in enumerate(clients)]
        updates = [flat_update(a, ref) for a, ref in zip(arrays, reference, strict=True)]
        labels = cluster_updates(updates, self.num_clusters, self.max_distance)
        self.last_groups = {}
        for label in sorted(set(labels)):
            members = [i for i, lab in enumerate(labels) if lab == label]
            group = self.next_group
            self.next_group += 1
            self.group_arrays[group] = weighted_average(
                [arrays[i] for i in members], [weights[i] for i in members]
            )
            self.last_groups[group] = [clients[i] for i in members]
            for i in members:
                self.client_group[clients[i]] = group
        live = set(self.client_group.values())
        self.group_arrays = {g: a for g, a in self.group_arrays.items() if g in live}
        overall, metrics = super().aggregate_train(server_round, replies)  # FedAvg's global mean
        if metrics is not None:
            metrics["num-clusters"] = len(self.last_groups)
            for key, label in membership_metrics(clients, labels).items():
                metrics[key] = label
        return overall, metrics
