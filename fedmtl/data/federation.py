"""Split a dataset into per-client, per-task partitions (flwr-datasets partitioners).

All clients share one pool (the dataset minus the pretraining source split). A
partitioner over the *base* labels gives each client its own non-IID share;
each client then sees its share through its task's label function and keeps a
seeded train/test split of it. Everything is a pure function of the spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from fedmtl.data.registry import get_dataset_spec


@dataclass(frozen=True)
class PartitionSpec:
    """Everything that decides which client holds which examples and task."""

    dataset: str
    tasks: tuple[str, ...]
    num_clients: int
    task_assignment: str = "round-robin"
    task_counts: tuple[tuple[str, int], ...] = ()
    partitioner: str = "dirichlet"
    dirichlet_alpha: float = 1.0
    classes_per_client: int = 4
    test_fraction: float = 0.25
    seed: int = 0


@dataclass(frozen=True)
class ClientData:
    """One client's task and its local train/test arrays (task labels applied)."""

    client_id: int
    task: str
    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]

    @property
    def num_train(self) -> int:
        """Number of local training examples."""
        return len(self.y_train)


def assign_tasks(
    tasks: tuple[str, ...], num_clients: int, mode: str, counts: Mapping[str, int]
) -> list[str]:
    """Return the task of each client id.

    ``round-robin`` cycles through ``tasks``; ``counts`` gives each task a block of
    consecutive client ids of the requested size, in the order of ``tasks``.
    """
    if mode == "round-robin":
        return [tasks[i % len(tasks)] for i in range(num_clients)]
    if mode == "counts":
        out = [task for task in tasks for _ in range(counts.get(task, 0))]
        if len(out) != num_clients:
            raise ValueError(f"task counts add up to {len(out)}, expected {num_clients}")
        return out
    raise ValueError(f"unknown task assignment '{mode}'")


def partition_indices(
    labels: npt.NDArray[np.int64], spec: PartitionSpec
) -> list[npt.NDArray[np.int64]]:
    """Split positions ``0..len(labels)-1`` over clients with a flwr-datasets partitioner."""
    from datasets import Dataset
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        Partitioner,
        PathologicalPartitioner,
    )

    # IidPartitioner takes contiguous shards, so shuffle first (seeded).
    order = np.random.default_rng(spec.seed).permutation(len(labels))
    table = Dataset.from_dict({"position": order.tolist(), "label": labels[order].tolist()})
    partitioner: Partitioner
    if spec.partitioner == "iid":
        partitioner = IidPartitioner(num_partitions=spec.num_clients)
    elif spec.partitioner == "dirichlet":
        partitioner = DirichletPartitioner(
            num_partitions=spec.num_clients,
            partition_by="label",
            alpha=spec.dirichlet_alpha,
            min_partition_size=4,
            self_balancing=True,
            seed=spec.seed,
        )
    elif spec.partitioner == "pathological":
        partitioner = PathologicalPartitioner(
            num_partitions=spec.num_clients,
            partition_by="label",
            num_classes_per_partition=spec.classes_per_client,
            class_assignment_mode="random",
            seed=spec.seed,
        )
    else:
        raise ValueError(f"unknown partitioner '{spec.partitioner}'")
    partitioner.dataset = table
    parts = []
    for client in range(spec.num_clients):
        positions = partitioner.load_partition(client)["position"]
        parts.append(np.sort(np.asarray(positions, dtype=np.int64)))
    return parts


def _train_test(
    indices: npt.NDArray[np.int64], test_fraction: float, seed: int, client_id: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    rng = np.random.default_rng([seed, client_id])
    shuffled = rng.permutation(indices)
    n_test = max(1, round(test_fraction * len(shuffled))) if len(shuffled) > 1 else 0
    return shuffled[n_test:], shuffled[:n_test]


@lru_cache(maxsize=4)
def build_federation(spec: PartitionSpec) -> tuple[ClientData, ...]:
    """Return every client's data; cached per spec (one build per Ray worker)."""
    dataset = get_dataset_spec(spec.dataset)
    base = dataset.load()
    _, pool = dataset.source_split(len(base.y))
    client_tasks = assign_tasks(
        spec.tasks, spec.num_clients, spec.task_assignment, dict(spec.task_counts)
    )
    parts = partition_indices(base.y[pool], spec)
    clients = []
    for client_id, (task, positions) in enumerate(zip(client_tasks, parts, strict=True)):
        label_fn = dataset.tasks[task].label_fn
        train_pos, test_pos = _train_test(positions, spec.test_fraction, spec.seed, client_id)
        train_idx, test_idx = pool[train_pos], pool[test_pos]
        clients.append(
            ClientData(
                client_id=client_id,
                task=task,
                x_train=base.x[train_idx],
                y_train=label_fn(base.y[train_idx]),
                x_test=base.x[test_idx],
                y_test=label_fn(base.y[test_idx]),
            )
        )
    return tuple(clients)


def client_data(spec: PartitionSpec, client_id: int) -> ClientData:
    """Return one client's data (raises ``IndexError`` for an unknown id)."""
    clients = build_federation(spec)
    if not 0 <= client_id < len(clients):
        raise IndexError(f"client id {client_id} outside 0..{len(clients) - 1}")
    return clients[client_id]
