"""Partitioners: how one pool of labelled examples is split over clients (a registry).

Each registered partitioner builds a flwr-datasets ``Partitioner`` from the
:class:`PartitionSpec` (``partitioner = "..."`` in an experiment file). Its
errors are :class:`PartitionError`, naming the experiment key to change, so a
run that cannot be split stops before it starts with that key
(``classes-per-client``, ``dirichlet-alpha``, ``num-clients``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from fedmtl.data.partition_spec import PartitionSpec
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
    """

    build: Callable[[PartitionSpec, npt.NDArray[np.int64]], Partitioner]
    key: str
    advice: str = ""


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


PARTITIONERS.add("iid", PartitionerEntry(_iid, "num-clients"))
PARTITIONERS.add(
    "dirichlet",
    PartitionerEntry(
        _dirichlet,
        "dirichlet-alpha",
        "a larger dirichlet-alpha (more even shares) or fewer num-clients lets every client "
        "get its examples",
    ),
)
PARTITIONERS.add(
    "pathological",
    PartitionerEntry(_pathological, "classes-per-client", "try fewer classes-per-client"),
)


def partition_indices(
    labels: npt.NDArray[np.int64], spec: PartitionSpec
) -> list[npt.NDArray[np.int64]]:
    """Split positions ``0..len(labels)-1`` over clients with the spec's partitioner.

    Raises
    ------
    PartitionError
        Naming the experiment key to change (an unknown name names ``partitioner``).
    """
    from datasets import Dataset

    try:
        entry = PARTITIONERS.get(spec.partitioner)
    except RegistryError as exc:
        raise PartitionError("partitioner", str(exc)) from None
    if spec.num_clients > len(labels):
        raise PartitionError(
            "num-clients",
            f"{spec.num_clients} clients but only {len(labels)} examples to split among them",
        )
    partitioner = entry.build(spec, labels)
    # IidPartitioner takes contiguous shards, so shuffle first (seeded).
    order = np.random.default_rng(spec.seed).permutation(len(labels))
    partitioner.dataset = Dataset.from_dict(
        {"position": order.tolist(), "label": labels[order].tolist()}
    )
    parts = []
    try:
        for client in range(spec.num_clients):
            positions = partitioner.load_partition(client)["position"]
            parts.append(np.sort(np.asarray(positions, dtype=np.int64)))
    except (ValueError, IndexError) as exc:
        setting = f" with {entry.key} = {getattr(spec, entry.key.replace('-', '_'), '?')}"
        advice = f"; {entry.advice}" if entry.advice else ""
        raise PartitionError(
            entry.key,
            f"the {spec.partitioner} partitioner cannot split {len(labels)} examples over "
            f"{spec.num_clients} clients{setting}: {exc}{advice}",
        ) from None
    return parts
