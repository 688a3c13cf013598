"""Partitioners: how one pool of labelled examples is split over clients (a registry).

Each registered partitioner builds a flwr-datasets ``Partitioner`` from the
:class:`PartitionSpec` (``partitioner = "..."`` in an experiment file). Its
errors are :class:`PartitionError`, naming the experiment key to change, so a
run that cannot be split stops before it starts with that key
(``classes-per-client``, ``dirichlet-alpha``, ``num-clients``).

``natural`` is the one partitioner whose clients come from the data: one client
per distinct client id of the pool (a client-id column of the user's file), in
the order of :func:`sorted_client_ids`, each holding exactly that id's examples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fedmtl.data.partition_spec import PartitionSpec, min_split_examples
from fedmtl.registry import Registry, RegistryError

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner

# The Dirichlet partitioner resamples until every client has this many examples.
MIN_DIRICHLET_PARTITION = 4


class PartitionError(ValueError):
    """The pool cannot be split as the experiment asks.

    Parameters
    ----------
    key : str
        The experiment key to change (kebab-case, e.g. ``classes-per-client``).
    message : str
        What is wrong and what would work.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


@dataclass(frozen=True)
class PartitionerEntry:
    """A registered partitioner.

    Parameters
    ----------
    build : callable
        ``build(spec, labels) -> Partitioner`` for a pool with these base labels;
        raises :class:`PartitionError` for a spec it can tell is impossible.
    key : str
        The experiment key named when the library partitioner fails anyway.
    advice : str
        What to change then, appended to that error.
    clients_from_data : bool
        One client per distinct client id of the pool (the pool must carry ids,
        and ``num-clients`` must equal their number); the partitioner partitions
        by the ``client`` column, each id coded as its rank in
        :func:`sorted_client_ids`.
    by_class : bool
        The split skews the pool's class labels, so it needs classes: a pool of
        regression targets (every distinct value a "class") is refused.
    """

    build: Callable[[PartitionSpec, npt.NDArray[np.int64]], Partitioner]
    key: str
    advice: str = ""
    clients_from_data: bool = False
    by_class: bool = False


PARTITIONERS: Registry[PartitionerEntry] = Registry("partitioner")


def _iid(spec: PartitionSpec, labels: npt.NDArray[np.int64]) -> Partitioner:
    from flwr_datasets.partitioner import IidPartitioner

    return IidPartitioner(num_partitions=spec.num_clients)


def _dirichlet(spec: PartitionSpec, labels: npt.NDArray[np.int64]) -> Partitioner:
    from flwr_datasets.partitioner import DirichletPartitioner

    if spec.num_clients * MIN_DIRICHLET_PARTITION > len(labels):
        raise PartitionError(
            "num-clients",
            f"the dirichlet partitioner gives every client at least {MIN_DIRICHLET_PARTITION} "
            f"examples, but {len(labels)} examples cannot fill {spec.num_clients} clients; "
            f"lower num-clients to <= {len(labels) // MIN_DIRICHLET_PARTITION}",
        )
    return DirichletPartitioner(
        num_partitions=spec.num_clients,
        partition_by="label",
        alpha=spec.dirichlet_alpha,
        min_partition_size=MIN_DIRICHLET_PARTITION,
        self_balancing=True,
        seed=spec.seed,
    )


def _pathological(spec: PartitionSpec, labels: npt.NDArray[np.int64]) -> Partitioner:
    from flwr_datasets.partitioner import PathologicalPartitioner

    classes = len(np.unique(labels))
    if spec.classes_per_client > classes:
        raise PartitionError(
            "classes-per-client",
            f"the pathological partitioner gives each client {spec.classes_per_client} "
            f"classes, but the data holds only {classes}; set classes-per-client <= {classes}",
        )
    return PathologicalPartitioner(
        num_partitions=spec.num_clients,
        partition_by="label",
        num_classes_per_partition=spec.classes_per_client,
        class_assignment_mode="random",
        seed=spec.seed,
    )


def _natural(spec: PartitionSpec, labels: npt.NDArray[np.int64]) -> Partitioner:
    from flwr_datasets.partitioner import NaturalIdPartitioner

    return NaturalIdPartitioner(partition_by="client")


def sorted_client_ids(client_ids: Sequence[str]) -> tuple[str, ...]:
    """The distinct client ids in client order: by value when all are integers, else as text.

    Client ``i`` of a natural partition holds the examples of the ``i``-th id.
    """
    unique = set(client_ids)
    try:
        # Integers sort by value so "10" follows "9", not "1".
        return tuple(sorted(unique, key=lambda cid: (int(cid), cid)))
    except ValueError:
        return tuple(sorted(unique))


PARTITIONERS.add("iid", PartitionerEntry(_iid, "num-clients"))
PARTITIONERS.add(
    "dirichlet",
    PartitionerEntry(
        _dirichlet,
        "dirichlet-alpha",
        "a larger dirichlet-alpha (more even shares) or fewer num-clients lets every client "
        "get its examples",
        by_class=True,
    ),
)
PARTITIONERS.add(
    "pathological",
    PartitionerEntry(
        _pathological, "classes-per-client", "try fewer classes-per-client", by_class=True
    ),
)
PARTITIONERS.add("natural", PartitionerEntry(_natural, "num-clients", clients_from_data=True))


def partitioner_entry(name: str) -> PartitionerEntry:
    """The registered partitioner ``name``.

    Raises
    ------
    PartitionError
        Naming ``partitioner``, for an unknown name.
    """
    try:
        return PARTITIONERS.get(name)
    except RegistryError as exc:
        raise PartitionError("partitioner", str(exc)) from None


def partition_indices(
    labels: npt.NDArray[np.int64],
    spec: PartitionSpec,
    client_ids: Sequence[str] | None = None,
) -> list[npt.NDArray[np.int64]]:
    """Split positions ``0..len(labels)-1`` over clients with the spec's partitioner.

    ``client_ids`` (one per position) are read by a partitioner whose clients come
    from the data (``natural``) and ignored by the others.

    Raises
    ------
    PartitionError
        Naming the experiment key to change (an unknown name names ``partitioner``).
    """
    from datasets import Dataset

    entry = partitioner_entry(spec.partitioner)
    if spec.num_clients > len(labels):
        raise PartitionError(
            "num-clients",
            f"{spec.num_clients} clients but only {len(labels)} examples to split among them",
        )
    partitioner = entry.build(spec, labels)
    # IidPartitioner takes contiguous shards, so shuffle first (seeded).
    order = np.random.default_rng(spec.seed).permutation(len(labels))
    columns: dict[str, list[int]] = {"position": order.tolist(), "label": labels[order].tolist()}
    if entry.clients_from_data:
        columns["client"] = natural_client_codes(client_ids, len(labels), spec)[order].tolist()
    partitioner.dataset = Dataset.from_dict(columns)
    parts = []
    try:
        positions_of = _positions_reader(partitioner, order, spec.num_clients)
        for client in range(spec.num_clients):
            parts.append(np.sort(np.asarray(positions_of(client), dtype=np.int64)))
    except (ValueError, IndexError) as exc:
        setting = f" with {entry.key} = {getattr(spec, entry.key.replace('-', '_'), '?')}"
        advice = f"; {entry.advice}" if entry.advice else ""
        raise PartitionError(
            entry.key,
            f"the {spec.partitioner} partitioner cannot split {len(labels)} examples over "
            f"{spec.num_clients} clients{setting}: {exc}{advice}",
        ) from None
    return parts


def _positions_reader(
    partitioner: Any, order: npt.NDArray[np.int64], num_clients: int
) -> Callable[[int], Any]:
    """``client -> its positions``: what ``load_partition(client)["position"]`` gives.

    ``load_partition`` builds a ``datasets.Dataset`` per client (~3 ms each: 30 s
    for 10,000 clients, in every process that builds the federation). The IID
    partitioner's contiguous shards and the others' index lists (computed and
    checked by their first ``load_partition``) are read directly instead; a
    partitioner of another kind, or whose direct reading disagrees with its
    first partition, is asked client by client as before.
    """
    from flwr_datasets.partitioner import IidPartitioner

    def slow(client: int) -> Any:
        return partitioner.load_partition(client)["position"]

    if isinstance(partitioner, IidPartitioner):
        div, mod = divmod(len(order), num_clients)  # datasets' Dataset.shard(contiguous=True)

        def fast(client: int) -> Any:
            start = div * client + min(client, mod)
            return order[start : start + div + (1 if client < mod else 0)]

    else:
        first = slow(0)  # computes (and checks) the partitioner's index lists
        indices = getattr(partitioner, "_partition_id_to_indices", None)
        if not isinstance(indices, dict) or len(indices) != num_clients:
            return slow

        def fast(client: int) -> Any:
            return order[np.asarray(indices[client], dtype=np.int64)]

        if not np.array_equal(np.asarray(first), fast(0)):
            return slow
    return fast


def natural_client_codes(
    client_ids: Sequence[str] | None, num_examples: int, spec: PartitionSpec
) -> npt.NDArray[np.int64]:
    """Each example's client: the rank of its id in :func:`sorted_client_ids`.

    Raises
    ------
    PartitionError
        Naming ``partitioner`` when there are no ids, ``num-clients`` when it is not
        the number of distinct ids, and ``dataset-options`` for an id with too few
        examples for one train and one test example (see ``test-fraction``).
    """
    if client_ids is None or len(client_ids) != num_examples:
        raise PartitionError(
            "partitioner",
            f"the {spec.partitioner} partitioner makes one client per client id, and these "
            "examples carry none (dataset 'files': set client-column on every task in "
            "dataset-options); other datasets need another partitioner",
        )
    order = sorted_client_ids(client_ids)
    if len(order) != spec.num_clients:
        raise PartitionError(
            "num-clients",
            f"the {spec.partitioner} partitioner makes one client per client id: the data "
            f"has {len(order)} distinct ids but num-clients is {spec.num_clients}; "
            f"set num-clients = {len(order)}",
        )
    rank = {cid: i for i, cid in enumerate(order)}
    codes = np.asarray([rank[cid] for cid in client_ids], dtype=np.int64)
    needed = min_split_examples(spec.test_fraction)
    sizes = np.bincount(codes, minlength=len(order))
    small = [(order[i], int(n)) for i, n in enumerate(sizes) if n < needed]
    if small:
        shown = ", ".join(f"{cid!r} ({n})" for cid, n in small[:5])
        raise PartitionError(
            "dataset-options",
            f"{len(small)} client id(s) have fewer than the {needed} examples a client "
            f"needs for one train and one test example at test-fraction = "
            f"{spec.test_fraction}: {shown}; drop or merge their rows",
        )
    return codes
