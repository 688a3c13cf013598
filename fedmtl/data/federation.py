"""Split a dataset into per-client, per-task partitions (the registered partitioners).

When the tasks share inputs (digits), all clients share one pool (the dataset
minus the pretraining source split): a partitioner over the *base* labels gives
each client its own non-IID share, which the client sees through its task's
label function. When each task has its own inputs (WordNet nouns, fortunes),
each task's pool is split by the same partitioner among the clients holding
that task. Every client keeps a seeded train/test split of its share, and with
``input-shift`` its inputs (train and test) move into its own domain
(:mod:`fedmtl.data.shifts`: feature skew on top of the partitioner's label skew).
Everything is a pure function of the spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmtl.data.partition_spec import PartitionSpec, num_test_examples
from fedmtl.data.partitioners import PartitionError, partition_indices, partitioner_entry
from fedmtl.data.registry import BaseData, DatasetSpec
from fedmtl.data.shifts import client_levels, shift_inputs

__all__ = [
    "ClientData",
    "PartitionError",
    "PartitionSpec",
    "apply_input_shift",
    "assign_tasks",
    "build_federation",
    "check_natural_tasks",
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
    n_test = num_test_examples(len(shuffled), test_fraction)
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


def _value_range(x: npt.NDArray[Any]) -> tuple[float, float]:
    return float(np.min(x)), float(np.max(x))


def apply_input_shift(
    client: ClientData, spec: PartitionSpec, level: float, value_range: tuple[float, float]
) -> ClientData:
    """``client`` with its train and test inputs shifted (``input-shift``), labels untouched."""
    if spec.input_shift == "none":
        return client

    def shift(x: npt.NDArray[Any], split: int) -> npt.NDArray[Any]:
        return shift_inputs(
            spec.input_shift,
            x,
            level=level,
            strength=spec.input_shift_strength,
            seed=spec.seed,
            client_id=client.client_id,
            split=split,
            value_range=value_range,
        )

    return replace(client, x_train=shift(client.x_train, 0), x_test=shift(client.x_test, 1))


def _shifted(
    clients: dict[int, ClientData], spec: PartitionSpec, ranges: dict[int, tuple[float, float]]
) -> dict[int, ClientData]:
    """Every client through :func:`apply_input_shift` at its level (:func:`client_levels`)."""
    if spec.input_shift == "none":
        return clients
    levels = client_levels(spec.num_clients, spec.input_shift_groups, spec.seed)
    return {
        c: apply_input_shift(data, spec, float(levels[c]), ranges[c]) for c, data in clients.items()
    }


def _task_pool(
    dataset: DatasetSpec, task: str, spec: PartitionSpec
) -> tuple[BaseData, npt.NDArray[np.int64]]:
    """A task's own data and its (capped) client pool, for datasets with per-task inputs."""
    assert dataset.task_data is not None
    base = dataset.task_data(task)
    _, pool = dataset.source_split(len(base.y))
    return base, _cap(pool, spec.max_examples_per_task, spec.seed)


def _pool_ids(base: BaseData, pool: npt.NDArray[np.int64]) -> tuple[str, ...] | None:
    if base.client_ids is None:
        return None
    return tuple(base.client_ids[i] for i in pool)


def check_natural_tasks(spec: PartitionSpec, dataset: DatasetSpec, client_tasks: list[str]) -> None:
    """With clients from the data, each task's clients are its own file's ids, task by task.

    Client ids ``0..`` go to the first task's ids (in sorted order), then the
    second task's, and so on: ``num-clients`` must be the sum of the tasks'
    distinct ids, and with several tasks the assignment must be these blocks
    (``task-assignment = "counts"`` with each task's count).

    Raises
    ------
    PartitionError
        Naming ``partitioner`` (a task without ids), ``num-clients``,
        ``task-assignment`` or ``task-counts``, with the values to set.
    """
    counts: dict[str, int] = {}
    for task in spec.tasks:
        ids = _pool_ids(*_task_pool(dataset, task, spec))
        if ids is None:
            raise PartitionError(
                "partitioner",
                f"task '{task}' has no client ids, and the {spec.partitioner} partitioner "
                f"makes one client per id (dataset 'files': set tasks.{task}.client-column "
                "in dataset-options)",
            )
        counts[task] = len(set(ids))
    found = ", ".join(f"{task}: {n}" for task, n in counts.items())
    total = sum(counts.values())
    if total != spec.num_clients:
        raise PartitionError(
            "num-clients",
            f"the {spec.partitioner} partitioner makes one client per client id, {total} in "
            f"all ({found}), but num-clients is {spec.num_clients}; set num-clients = {total}",
        )
    if client_tasks != [task for task in spec.tasks for _ in range(counts[task])]:
        table = ", ".join(f"{task} = {n}" for task, n in counts.items())
        raise PartitionError(
            "task-counts" if spec.task_assignment == "counts" else "task-assignment",
            f"the {spec.partitioner} partitioner numbers clients task by task, each task's "
            f'from its own file ({found}): set task-assignment = "counts" and '
            f"task-counts = {{{table}}} (in the order of tasks)",
        )


@lru_cache(maxsize=4)
def build_federation(spec: PartitionSpec) -> tuple[ClientData, ...]:
    """Return every client's data; cached per spec (one build per Ray worker)."""
    dataset = spec.dataset_spec()
    client_tasks = assign_tasks(
        spec.tasks, spec.num_clients, spec.task_assignment, dict(spec.task_counts)
    )
    clients: dict[int, ClientData] = {}
    # Each client's input shift uses the (min, max) of its inputs' whole dataset.
    ranges: dict[int, tuple[float, float]] = {}
    shifting = spec.input_shift != "none"
    if dataset.load is not None:
        base = dataset.load()
        if shifting:
            ranges = dict.fromkeys(range(spec.num_clients), _value_range(base.x))
        _, pool = dataset.source_split(len(base.y))
        pool = _cap(pool, spec.max_examples_per_task, spec.seed)
        parts = partition_indices(base.y[pool], spec, _pool_ids(base, pool))
        for client_id, (task, positions) in enumerate(zip(client_tasks, parts, strict=True)):
            label_fn = dataset.tasks[task].label_fn
            clients[client_id] = _client(client_id, task, base, label_fn, pool[positions], spec)
    else:
        if partitioner_entry(spec.partitioner).clients_from_data:
            check_natural_tasks(spec, dataset, client_tasks)
        for task in spec.tasks:
            holders = [c for c, t in enumerate(client_tasks) if t == task]
            if not holders:
                continue
            base, pool = _task_pool(dataset, task, spec)
            if partitioner_entry(spec.partitioner).by_class and dataset.tasks[task].kind != (
                "classification"
            ):
                raise PartitionError(
                    "partitioner",
                    f"task '{task}' is a {dataset.tasks[task].kind} task: the "
                    f"'{spec.partitioner}' partitioner skews class labels; use 'iid' or 'natural'",
                )
            task_spec = replace(spec, num_clients=len(holders))
            try:
                parts = partition_indices(base.y[pool], task_spec, _pool_ids(base, pool))
            except PartitionError as exc:
                raise PartitionError(
                    exc.key, f"task '{task}' ({len(holders)} clients): {exc}"
                ) from None
            label_fn = dataset.tasks[task].label_fn
            for client_id, positions in zip(holders, parts, strict=True):
                clients[client_id] = _client(client_id, task, base, label_fn, pool[positions], spec)
                if shifting:
                    ranges[client_id] = _value_range(base.x)
    clients = _shifted(clients, spec, ranges)
    return tuple(clients[c] for c in range(spec.num_clients))


def client_data(spec: PartitionSpec, client_id: int) -> ClientData:
    """Return one client's data (raises ``IndexError`` for an unknown id)."""
    clients = build_federation(spec)
    if not 0 <= client_id < len(clients):
        raise IndexError(f"client id {client_id} outside 0..{len(clients) - 1}")
    return clients[client_id]
