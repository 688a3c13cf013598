"""A deployed client's own data: a local file named by the SuperNode's ``--node-config``.

On a device, nothing is partitioned: the SuperNode is started with, for example::

    flower-supernode ... --node-config "data-path='/data/reviews.csv' task='sentiment'"

and the ClientApp reads that file, checks the task and the labels against the
run's dataset (its tasks and their label names), and splits it into train and
test with the run's seed and ``test-fraction``. Keys of the node config:

``data-path`` (required)
    A CSV/JSONL/NPZ file or an image folder (see :mod:`fedmtl.data.files`).
``task`` (required)
    One of the run's ``tasks``.
``dataset-format`` (optional)
    ``csv``, ``jsonl``, ``npz`` or ``image-folder``; inferred from the path.
``client-id`` (optional)
    This device's id in results (default: the node id).
``text-column``, ``label-column``, ``x-key``, ``y-key`` (optional)
    As in the ``files`` dataset.

Labels are the task's label names (``"0"`` .. ``"9"`` for a task without named
labels), or finite numbers for a ``regression`` task (standardized with the
run's task scale); a label outside them, an unknown task or a missing file is a
:class:`DeviceDataError` that names the node-config key to fix.
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


def device_data(
    node_config: Mapping[str, Any],
    dataset: DatasetSpec,
    tasks: tuple[str, ...],
    seed: int,
    test_fraction: float,
    default_client_id: int,
) -> ClientData:
    """Read, check and split this device's data.

    Raises
    ------
    DeviceDataError
        For a missing key or file, an unknown task, labels outside the task's, or
        (regression) a label that is not a finite number.
    """
    for key in REQUIRED:
        if key not in node_config:
            raise DeviceDataError(key, f"missing; a deployed node needs {list(REQUIRED)}")
    task = str(node_config["task"])
    if task not in tasks:
        raise DeviceDataError("task", f"'{task}' is not a task of this run; allowed: {list(tasks)}")
    path = Path(str(node_config["data-path"])).expanduser()
    if not path.exists():
        raise DeviceDataError("data-path", f"{path} does not exist on this device")
    options = {
        "fmt": node_config.get("dataset-format"),
        "text_column": str(node_config.get("text-column", "text")),
        "label_column": str(node_config.get("label-column", "label")),
        "x_key": str(node_config.get("x-key", "x")),
        "y_key": str(node_config.get("y-key", "y")),
    }
    try:
        x, raw = read_labelled_file(path, **options)  # type: ignore[arg-type]
    except (KeyError, ValueError) as exc:
        raise DeviceDataError("data-path", str(exc)) from None
    fmt = options["fmt"] or infer_format(path)  # read_labelled_file inferred it already
    column = str(options["y_key"] if fmt == "npz" else options["label_column"])
    spec = dataset.tasks[task]
    try:
        y = task_targets(spec.kind, raw, task_label_names(dataset, task), path, column)
    except ValueError as exc:
        raise DeviceDataError("task", f"{exc} (the labels of task '{task}')") from None
    client_id = int(node_config.get("client-id", default_client_id))
    train, test = train_test_positions(np.arange(len(y)), test_fraction, seed, client_id)
    return ClientData(
        client_id=client_id,
        task=task,
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
    )
