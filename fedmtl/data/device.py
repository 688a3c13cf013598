"""A deployed client's own data: local files named by the SuperNode's ``--node-config``.

On a device, nothing is partitioned: the SuperNode is started with, for example::

    flower-supernode ... --node-config "data-path='/data/reviews.csv' task='sentiment'"

and the ClientApp reads that file, checks the task and the labels against the
run's dataset (its tasks and their label names), and splits it into train and
test with the run's seed and ``test-fraction``. A device holding several tasks
lists them comma-separated, with one file per task::

    --node-config "task='digit,parity' data-path-digit='/data/d.npz' data-path-parity='/data/p.npz'"

Keys of the node config:

``task`` (required)
    One of the run's ``tasks``, or several, comma-separated (no task twice).
``data-path`` (required for one task)
    A CSV/JSONL/NPZ file or an image folder (see :mod:`fedmtl.data.files`).
``data-path-<task>`` (required for each task of several)
    That task's file (a one-task device may use it instead of ``data-path``).
``dataset-format`` (optional)
    ``csv``, ``jsonl``, ``npz`` or ``image-folder``; inferred from the path.
``client-id`` (optional)
    This device's id in results (default: the node id).
``text-column``, ``label-column``, ``x-key``, ``y-key`` (optional)
    As in the ``files`` dataset.

``dataset-format``, ``text-column``, ``label-column``, ``x-key`` and ``y-key`` may
also be given per task (``label-column-parity``), which wins over the plain key.
Labels are the task's label names (``"0"`` .. ``"9"`` for a task without named
labels), or finite numbers for a ``regression`` task (standardized with the
run's task scale); a label outside them, an unknown or repeated task or a
missing file is a :class:`DeviceDataError` that names the node-config key to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedmtl.data.federation import ClientData, train_test_positions
from fedmtl.data.files import infer_format, read_labelled_file, task_targets
from fedmtl.data.registry import DatasetSpec

REQUIRED = ("data-path", "task")


class DeviceDataError(ValueError):
    """A node config that cannot give this device its data, naming the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"node-config '{key}': {message}")
        self.key = key


def task_label_names(dataset: DatasetSpec, task: str) -> tuple[str, ...]:
    """The label names of ``task`` (``"0"``..``"n-1"`` when the task names none)."""
    spec = dataset.tasks[task]
    return spec.labels or tuple(str(i) for i in range(spec.num_outputs))


def node_tasks(node_config: Mapping[str, Any], tasks: tuple[str, ...]) -> tuple[str, ...]:
    """The tasks ``node_config["task"]`` names (comma-separated), in the run's task order.

    Raises
    ------
    DeviceDataError
        Naming ``task``: missing, empty, unknown or repeated.
    """
    if "task" not in node_config:
        raise DeviceDataError("task", f"missing; a deployed node needs {list(REQUIRED)}")
    names = [name.strip() for name in str(node_config["task"]).split(",")]
    if not all(names):
        raise DeviceDataError("task", f"{node_config['task']!r} has an empty task name")
    for name in names:
        if name not in tasks:
            raise DeviceDataError(
                "task", f"'{name}' is not a task of this run; allowed: {list(tasks)}"
            )
    if len(set(names)) != len(names):
        raise DeviceDataError("task", f"lists a task twice: {node_config['task']!r}")
    return tuple(task for task in tasks if task in names)


def _setting(node_config: Mapping[str, Any], key: str, task: str, default: Any) -> Any:
    """A node-config setting for ``task``: ``<key>-<task>``, else ``<key>``, else ``default``."""
    return node_config.get(f"{key}-{task}", node_config.get(key, default))


def _path_key(node_config: Mapping[str, Any], task: str, several: bool) -> str:
    """The key naming ``task``'s file: ``data-path-<task>``, or ``data-path`` for one task."""
    own = f"data-path-{task}"
    if own in node_config or several:
        if own not in node_config:
            raise DeviceDataError(
                own, f"missing; a node holding several tasks needs one file per task ({own})"
            )
        return own
    if "data-path" not in node_config:
        raise DeviceDataError("data-path", f"missing; a deployed node needs {list(REQUIRED)}")
    return "data-path"


def _read_task(
    node_config: Mapping[str, Any],
    dataset: DatasetSpec,
    task: str,
    path_key: str,
    split: tuple[int, float, int],
) -> ClientData:
    """Read, check and split ``task``'s file; ``split`` is (seed, test fraction, client id)."""
    seed, test_fraction, client_id = split
    path = Path(str(node_config[path_key])).expanduser()
    if not path.exists():
        raise DeviceDataError(path_key, f"{path} does not exist on this device")
    options = {
        "fmt": _setting(node_config, "dataset-format", task, None),
        "text_column": str(_setting(node_config, "text-column", task, "text")),
        "label_column": str(_setting(node_config, "label-column", task, "label")),
        "x_key": str(_setting(node_config, "x-key", task, "x")),
        "y_key": str(_setting(node_config, "y-key", task, "y")),
    }
    try:
        x, raw = read_labelled_file(path, **options)
    except (KeyError, ValueError) as exc:
        raise DeviceDataError(path_key, str(exc)) from None
    fmt = options["fmt"] or infer_format(path)  # read_labelled_file inferred it already
    column = str(options["y_key"] if fmt == "npz" else options["label_column"])
    spec = dataset.tasks[task]
    try:
        y = task_targets(spec.kind, raw, task_label_names(dataset, task), path, column)
    except ValueError as exc:
        raise DeviceDataError("task", f"{exc} (the labels of task '{task}')") from None
    train, test = train_test_positions(np.arange(len(y)), test_fraction, seed, client_id)
    return ClientData(
        client_id=client_id,
        task=task,
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
    )


def device_tasks(
    node_config: Mapping[str, Any],
    dataset: DatasetSpec,
    tasks: tuple[str, ...],
    seed: int,
    test_fraction: float,
    default_client_id: int,
) -> tuple[ClientData, ...]:
    """Read, check and split this device's data: one :class:`ClientData` per task it holds.

    The parts are in the run's task order; each task's file is split with the
    run's seed and ``test_fraction``.

    Raises
    ------
    DeviceDataError
        For a missing key or file, an unknown or repeated task, labels outside the
        task's, or (regression) a label that is not a finite number.
    """
    held = node_tasks(node_config, tasks)
    keys = {task: _path_key(node_config, task, len(held) > 1) for task in held}
    client_id = int(node_config.get("client-id", default_client_id))
    split = (seed, test_fraction, client_id)
    return tuple(_read_task(node_config, dataset, task, keys[task], split) for task in held)


def device_data(
    node_config: Mapping[str, Any],
    dataset: DatasetSpec,
    tasks: tuple[str, ...],
    seed: int,
    test_fraction: float,
    default_client_id: int,
) -> ClientData:
    """Read, check and split the data of a device holding one task (see :func:`device_tasks`).

    Raises
    ------
    DeviceDataError
        As :func:`device_tasks`, and naming ``task`` when it lists several tasks.
    """
    parts = device_tasks(node_config, dataset, tasks, seed, test_fraction, default_client_id)
    if len(parts) != 1:
        raise DeviceDataError(
            "task", f"lists {len(parts)} tasks; read a several-task device with device_tasks()"
        )
    return parts[0]
