"""Split a dataset into per-client, per-task partitions (the registered partitioners).

When the tasks share inputs (digits), all clients share one pool (the dataset
minus the pretraining source split): a partitioner over the *base* labels gives
each client its own non-IID share, which the client sees through its task's
label function. When each task has its own inputs (WordNet nouns, fortunes),
each task's pool is split by the same partitioner among the clients holding
that task. Every client keeps a seeded train/test split of its share.
Everything is a pure function of the spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmtl.data.partition_spec import PartitionSpec
from fedmtl.data.partitioners import PartitionError, partition_indices
from fedmtl.data.registry import BaseData

__all__ = [
    "ClientData",
    "PartitionError",
    "PartitionSpec",
    "assign_tasks",
    "build_federation",
    "client_data",
    "partition_indices",
    "train_test_positions",
]


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
            try:
                parts = partition_indices(base.y[pool], task_spec)
            except PartitionError as exc:
                raise PartitionError(
                    exc.key, f"task '{task}' ({len(holders)} clients): {exc}"
                ) from None
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
