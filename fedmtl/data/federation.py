"""Split a dataset into per-client, per-task partitions (flwr-datasets partitioners).

When the tasks share inputs (digits), all clients share one pool (the dataset
minus the pretraining source split): a partitioner over the *base* labels gives
each client its own non-IID share, which the client sees through its task's
label function. When each task has its own inputs (WordNet nouns, fortunes),
each task's pool is split by the same partitioner among the clients holding
that task. Every client keeps a seeded train/test split of its share.
Everything is a pure function of the spec.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmtl.data.registry import BaseData, DatasetSpec, get_dataset_spec


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
    dataset_options: str = "{}"  # canonical JSON, so the spec stays hashable
    max_examples_per_task: int = 0

    def dataset_spec(self) -> DatasetSpec:
        """The dataset these partitions are drawn from."""
        options: dict[str, Any] = json.loads(self.dataset_options)
        return get_dataset_spec(self.dataset, options)


@dataclass(frozen=True)
class ClientData:
    """One client's task and its local train/test arrays (task labels applied)."""

    client_id: int
    task: str
    x_train: npt.NDArray[Any]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[Any]
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


def train_test_positions(
    indices: npt.NDArray[np.int64], test_fraction: float, seed: int, client_id: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Seeded per-client split of ``indices`` into train and test (at least one test example)."""
    rng = np.random.default_rng([seed, client_id])
    shuffled = rng.permutation(indices)
    n_test = max(1, round(test_fraction * len(shuffled))) if len(shuffled) > 1 else 0
    return shuffled[n_test:], shuffled[:n_test]


def _cap(pool: npt.NDArray[np.int64], limit: int, seed: int) -> npt.NDArray[np.int64]:
    """A seeded subset of at most ``limit`` pool positions (``0``: all of them)."""
    if limit <= 0 or len(pool) <= limit:
        return pool
    return np.sort(np.random.default_rng([seed, 7]).choice(pool, size=limit, replace=False))


def _client(
    client_id: int,
    task: str,
    base: BaseData,
    label_fn: Any,
    indices: npt.NDArray[np.int64],
    spec: PartitionSpec,
) -> ClientData:
    train_pos, test_pos = train_test_positions(indices, spec.test_fraction, spec.seed, client_id)
    return ClientData(
        client_id=client_id,
        task=task,
        x_train=base.x[train_pos],
        y_train=label_fn(base.y[train_pos]),
        x_test=base.x[test_pos],
        y_test=label_fn(base.y[test_pos]),
    )


@lru_cache(maxsize=4)
def build_federation(spec: PartitionSpec) -> tuple[ClientData, ...]:
    """Return every client's data; cached per spec (one build per Ray worker)."""
    dataset = spec.dataset_spec()
    client_tasks = assign_tasks(
        spec.tasks, spec.num_clients, spec.task_assignment, dict(spec.task_counts)
    )
    clients: dict[int, ClientData] = {}
    if dataset.load is not None:
        base = dataset.load()
        _, pool = dataset.source_split(len(base.y))
        pool = _cap(pool, spec.max_examples_per_task, spec.seed)
        parts = partition_indices(base.y[pool], spec)
        for client_id, (task, positions) in enumerate(zip(client_tasks, parts, strict=True)):
            label_fn = dataset.tasks[task].label_fn
            clients[client_id] = _client(client_id, task, base, label_fn, pool[positions], spec)
    else:
        assert dataset.task_data is not None
        for task in spec.tasks:
            holders = [c for c, t in enumerate(client_tasks) if t == task]
            if not holders:
                continue
            base = dataset.task_data(task)
            _, pool = dataset.source_split(len(base.y))
            pool = _cap(pool, spec.max_examples_per_task, spec.seed)
            task_spec = replace(spec, num_clients=len(holders))
            parts = partition_indices(base.y[pool], task_spec)
            label_fn = dataset.tasks[task].label_fn
            for client_id, positions in zip(holders, parts, strict=True):
                clients[client_id] = _client(client_id, task, base, label_fn, pool[positions], spec)
    return tuple(clients[c] for c in range(spec.num_clients))


def client_data(spec: PartitionSpec, client_id: int) -> ClientData:
    """Return one client's data (raises ``IndexError`` for an unknown id)."""
    clients = build_federation(spec)
    if not 0 <= client_id < len(clients):
        raise IndexError(f"client id {client_id} outside 0..{len(clients) - 1}")
    return clients[client_id]
