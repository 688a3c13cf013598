"""Per-device data files cut from an experiment's partitions (for local deployments).

A real device already holds its own files; ``fedmtl deploy local`` needs some, so
it writes client ``i``'s partition of the experiment (train and test rows
together: the device splits them itself with the run's seed) to
``<directory>/node-<i>/``, labels as the task's label names, in the format a
device would use: ``data.npz`` (arrays ``x``, ``y``) for images and vectors,
``data.jsonl`` (``text``, ``label``) for text. A client holding several tasks
gets one file per task, ``data-<task>.npz`` (or ``.jsonl``), and a node config
listing them (``task = "a,b"``, ``data-path-a``, ``data-path-b``: see
:mod:`fedmtl.data.device`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedmtl.atomic import atomic_file, atomic_write_text
from fedmtl.config import ExperimentConfig, partition_spec
from fedmtl.data.device import task_label_names
from fedmtl.data.federation import ClientData, client_tasks
from fedmtl.data.registry import DatasetSpec


@dataclass(frozen=True)
class TaskFile:
    """One task's data file on a device."""

    task: str
    path: Path
    fmt: str = "npz"


@dataclass(frozen=True)
class DeviceFile:
    """One device's data: its client id and one file per task it holds (run task order)."""

    client_id: int
    files: tuple[TaskFile, ...]

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this device holds."""
        return tuple(file.task for file in self.files)

    @property
    def task(self) -> str:
        """The node config's ``task`` value: the task, or the tasks comma-separated."""
        return ",".join(self.tasks)

    @property
    def path(self) -> Path:
        """The file of a one-task device."""
        return self._single().path

    @property
    def fmt(self) -> str:
        """The file format of a one-task device."""
        return self._single().fmt

    def _single(self) -> TaskFile:
        if len(self.files) != 1:
            raise ValueError(f"device {self.client_id} holds tasks {self.tasks}: see .files")
        return self.files[0]

    def node_config(self, state_dir: Path) -> dict[str, str | int]:
        """The SuperNode ``--node-config`` entries that point the ClientApp at these files.

        One task: ``data-path``, ``task``, ``dataset-format``; several: ``task``
        comma-separated with ``data-path-<task>`` and ``dataset-format-<task>`` each.
        """
        entries: dict[str, str | int] = {}
        if len(self.files) == 1:
            entries = {"data-path": str(self.path), "task": self.task, "dataset-format": self.fmt}
        else:
            entries["task"] = self.task
            for file in self.files:
                entries[f"data-path-{file.task}"] = str(file.path)
                entries[f"dataset-format-{file.task}"] = file.fmt
        entries["client-id"] = self.client_id
        entries["state-dir"] = str(state_dir)
        return entries


def _write_part(data: ClientData, dataset: DatasetSpec, folder: Path, stem: str) -> TaskFile:
    """Write one task's rows (train then test) as ``<stem>.npz``, or ``<stem>.jsonl`` for text."""
    names = np.asarray(task_label_names(dataset, data.task))
    x = np.concatenate([data.x_train, data.x_test])
    y = names[np.concatenate([data.y_train, data.y_test])]
    if x.dtype == object:  # texts
        path = folder / f"{stem}.jsonl"
        rows = zip(x, y, strict=True)
        lines = (json.dumps({"text": str(t), "label": str(label)}) for t, label in rows)
        atomic_write_text(path, "".join(f"{line}\n" for line in lines))
        return TaskFile(data.task, path, "jsonl")
    path = folder / f"{stem}.npz"
    with atomic_file(path) as fh:
        np.savez(fh, x=x, y=y)
    return TaskFile(data.task, path)


def write_device_files(
    cfg: ExperimentConfig, directory: str | Path, client_ids: list[int]
) -> list[DeviceFile]:
    """Write the partitions of ``client_ids``: one file per client and task it holds.

    Raises
    ------
    ValueError
        For a client id outside the experiment's ``num-clients``.
    """
    bad = [c for c in client_ids if not 0 <= c < cfg.num_clients]
    if bad:
        raise ValueError(f"clients {bad} are not in the experiment (num-clients {cfg.num_clients})")
    spec = partition_spec(cfg)
    dataset = spec.dataset_spec()
    devices = []
    for client_id in client_ids:
        parts = client_tasks(spec, client_id)
        folder = Path(directory) / f"node-{client_id}"
        folder.mkdir(parents=True, exist_ok=True)
        stems = ["data"] if len(parts) == 1 else [f"data-{part.task}" for part in parts]
        files = tuple(
            _write_part(part, dataset, folder, stem)
            for part, stem in zip(parts, stems, strict=True)
        )
        devices.append(DeviceFile(client_id, files))
    return devices
