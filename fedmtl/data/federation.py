"""Split a dataset into per-client, per-task partitions (the registered partitioners).

A client holds one or more tasks (:mod:`fedmtl.data.assignment`) and gets one
:class:`ClientData` per task, in the run's task order. When the tasks share
inputs (digits), all clients share one pool (the dataset minus the pretraining
source split): a partitioner over the *base* labels gives each client its own
non-IID share, which the client sees through each of its tasks' label
functions: a client's tasks have the same examples and the same train/test
split (one input, several labels). When each task has its own inputs (WordNet
nouns, fortunes, files), each task's pool is split by the same partitioner among
the clients holding that task. Every client keeps a seeded train/test split of
its share, and with ``input-shift`` its inputs (train and test, every task's
alike) move into its own domain (:mod:`fedmtl.data.shifts`: feature skew on top
of the partitioner's label skew); with ``label-noise`` a task's training targets
are corrupted (:mod:`fedmtl.data.label_noise`; test splits stay clean).
Everything is a pure function of the spec.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmtl.data.assignment import AssignmentError, assign_tasks
from fedmtl.data.label_noise import LabelNoiseError, check_label_noise, noisy_train_targets
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
    "client_tasks",
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


def _client_parts(
    client_id: int,
    tasks: tuple[str, ...],
    base: BaseData,
    dataset: DatasetSpec,
    indices: npt.NDArray[np.int64],
    spec: PartitionSpec,
) -> dict[str, ClientData]:
    """One client's ``tasks`` on the same examples: one split, one input array, their labels."""
    train_pos, test_pos = train_test_positions(indices, spec.test_fraction, spec.seed, client_id)
    x_train, x_test = base.x[train_pos], base.x[test_pos]
    y_train, y_test = base.y[train_pos], base.y[test_pos]
    out = {}
    for task in tasks:
        label_fn = dataset.tasks[task].label_fn
        out[task] = ClientData(
            client_id=client_id,
            task=task,
            x_train=x_train,
            y_train=label_fn(y_train),
            x_test=x_test,
            y_test=label_fn(y_test),
        )
    return out


def _value_range(x: npt.NDArray[Any]) -> tuple[float, float]:
    if not np.issubdtype(x.dtype, np.number):  # text: its shifts take no range
        return 0.0, 0.0
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
    clients: dict[int, dict[str, ClientData]],
    spec: PartitionSpec,
    ranges: dict[tuple[int, str], tuple[float, float]],
) -> dict[int, dict[str, ClientData]]:
    """Every part through :func:`apply_input_shift` at its client's level (:func:`client_levels`).

    Parts that share their inputs (a shared pool) are shifted once and keep sharing them.
    """
    if spec.input_shift == "none":
        return clients
    levels = client_levels(spec.num_clients, spec.input_shift_groups, spec.seed)
    out: dict[int, dict[str, ClientData]] = {}
    for c, parts in clients.items():
        done: dict[tuple[int, int], ClientData] = {}
        out[c] = {}
        for task, data in parts.items():
            same = done.get((id(data.x_train), id(data.x_test)))
            if same is None:
                same = apply_input_shift(data, spec, float(levels[c]), ranges[(c, task)])
                done[(id(data.x_train), id(data.x_test))] = same
            out[c][task] = replace(data, x_train=same.x_train, x_test=same.x_test)
    return out


def _noisy(
    clients: dict[int, dict[str, ClientData]], spec: PartitionSpec, dataset: DatasetSpec
) -> dict[int, dict[str, ClientData]]:
    """Every part of a ``label-noise`` task with its training targets noised (tests clean)."""
    levels = dict(spec.label_noise)
    if not levels:
        return clients
    try:
        check_label_noise(levels, spec.tasks, dataset.tasks)
    except LabelNoiseError as exc:
        raise PartitionError("label-noise", str(exc)) from None
    return {
        c: {
            task: data
            if task not in levels
            else replace(
                data,
                y_train=noisy_train_targets(
                    data.y_train, levels[task], dataset.tasks[task], spec.seed, c
                ),
            )
            for task, data in parts.items()
        }
        for c, parts in clients.items()
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


def _assignment(spec: PartitionSpec) -> tuple[tuple[str, ...], ...]:
    try:
        return spec.assignment()
    except AssignmentError as exc:
        raise PartitionError(exc.key, str(exc)) from None


def _shared_pool(
    spec: PartitionSpec,
    dataset: DatasetSpec,
    assignment: tuple[tuple[str, ...], ...],
    ranges: dict[tuple[int, str], tuple[float, float]],
) -> dict[int, dict[str, ClientData]]:
    """Tasks that share inputs: the pool split once, each client's tasks on its one share."""
    assert dataset.load is not None
    base = dataset.load()
    if spec.input_shift != "none":
        value_range = _value_range(base.x)
        ranges.update({(c, t): value_range for c, ts in enumerate(assignment) for t in ts})
    _, pool = dataset.source_split(len(base.y))
    pool = _cap(pool, spec.max_examples_per_task, spec.seed)
    parts = partition_indices(base.y[pool], spec, _pool_ids(base, pool))
    return {
        c: _client_parts(c, tasks, base, dataset, pool[positions], spec)
        for c, (tasks, positions) in enumerate(zip(assignment, parts, strict=True))
    }


def _task_pools(
    spec: PartitionSpec,
    dataset: DatasetSpec,
    assignment: tuple[tuple[str, ...], ...],
    ranges: dict[tuple[int, str], tuple[float, float]],
) -> dict[int, dict[str, ClientData]]:
    """Tasks with their own inputs: each task's pool split among the clients holding it."""
    if partitioner_entry(spec.partitioner).clients_from_data:
        if any(len(tasks) > 1 for tasks in assignment):
            raise PartitionError(
                "tasks-per-client",
                f"the {spec.partitioner} partitioner makes each task's clients from that "
                "task's own file, so a client cannot hold several tasks of dataset "
                f"'{spec.dataset}'; set tasks-per-client = 1",
            )
        check_natural_tasks(spec, dataset, [tasks[0] for tasks in assignment])
    clients: dict[int, dict[str, ClientData]] = {c: {} for c in range(spec.num_clients)}
    for task in spec.tasks:
        holders = [c for c, tasks in enumerate(assignment) if task in tasks]
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
        for client_id, positions in zip(holders, parts, strict=True):
            clients[client_id].update(
                _client_parts(client_id, (task,), base, dataset, pool[positions], spec)
            )
            if spec.input_shift != "none":
                ranges[(client_id, task)] = _value_range(base.x)
    return clients


@lru_cache(maxsize=4)
def build_federation(spec: PartitionSpec) -> tuple[tuple[ClientData, ...], ...]:
    """Return every client's data: per client id, one :class:`ClientData` per task it holds.

    Each client's parts are in the run's task order. Cached per spec (one build per Ray
    worker).

    Raises
    ------
    PartitionError
        Naming the experiment key to change (the task assignment keys included).
    """
    dataset = spec.dataset_spec()
    assignment = _assignment(spec)
    # Each part's input shift uses the (min, max) of its inputs' whole dataset.
    ranges: dict[tuple[int, str], tuple[float, float]] = {}
    build = _shared_pool if dataset.load is not None else _task_pools
    shifted = _shifted(build(spec, dataset, assignment, ranges), spec, ranges)
    clients = _noisy(shifted, spec, dataset)
    return tuple(tuple(clients[c][task] for task in tasks) for c, tasks in enumerate(assignment))


def client_tasks(spec: PartitionSpec, client_id: int) -> tuple[ClientData, ...]:
    """Return one client's data, one :class:`ClientData` per task it holds (run task order).

    Raises
    ------
    IndexError
        For an unknown client id.
    """
    clients = build_federation(spec)
    if not 0 <= client_id < len(clients):
        raise IndexError(f"client id {client_id} outside 0..{len(clients) - 1}")
    return clients[client_id]


def client_data(spec: PartitionSpec, client_id: int) -> ClientData:
    """Return the data of a client holding one task (see :func:`client_tasks`).

    Raises
    ------
    IndexError
        For an unknown client id.
    ValueError
        For a client holding several tasks (``tasks-per-client`` > 1).
    """
    parts = client_tasks(spec, client_id)
    if len(parts) != 1:
        names = ", ".join(part.task for part in parts)
        raise ValueError(
            f"client {client_id} holds {len(parts)} tasks ({names}; tasks-per-client = "
            f"{spec.tasks_per_client}): use client_tasks() for its data"
        )
    return parts[0]
