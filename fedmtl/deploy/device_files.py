"""Per-device data files cut from an experiment's partitions (for local deployments).

A real device already holds its own file; ``fedmtl deploy local`` needs some, so
it writes client ``i``'s partition of the experiment (train and test rows
together: the device splits them itself with the run's seed) to
``<directory>/node-<i>/``, labels as the task's label names, in the format a
device would use: ``data.npz`` (arrays ``x``, ``y``) for images and vectors,
``data.jsonl`` (``text``, ``label``) for text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedmtl.atomic import atomic_file, atomic_write_text
from fedmtl.config import ExperimentConfig, partition_spec
from fedmtl.data.device import task_label_names
from fedmtl.data.federation import client_data


@dataclass(frozen=True)
class DeviceFile:
    """One device's data: its client id, task and file."""

    client_id: int
    task: str
    path: Path
    fmt: str = "npz"

    def node_config(self, state_dir: Path) -> dict[str, str | int]:
        """The SuperNode ``--node-config`` entries that point the ClientApp at this file."""
        return {
            "data-path": str(self.path),
            "task": self.task,
            "dataset-format": self.fmt,
            "client-id": self.client_id,
            "state-dir": str(state_dir),
        }


def write_device_files(
    cfg: ExperimentConfig, directory: str | Path, client_ids: list[int]
) -> list[DeviceFile]:
    """Write the partitions of ``client_ids``, one file per client (NPZ, or JSONL for text).

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
    files = []
    for client_id in client_ids:
        data = client_data(spec, client_id)
        names = np.asarray(task_label_names(dataset, data.task))
        x = np.concatenate([data.x_train, data.x_test])
        y = names[np.concatenate([data.y_train, data.y_test])]
        folder = Path(directory) / f"node-{client_id}"
        folder.mkdir(parents=True, exist_ok=True)
        if x.dtype == object:  # texts
            path = folder / "data.jsonl"
            rows = zip(x, y, strict=True)
            lines = (json.dumps({"text": str(t), "label": str(label)}) for t, label in rows)
            atomic_write_text(path, "".join(f"{line}\n" for line in lines))
            files.append(DeviceFile(client_id, data.task, path, "jsonl"))
            continue
        path = folder / "data.npz"
        with atomic_file(path) as fh:
            np.savez(fh, x=x, y=y)
        files.append(DeviceFile(client_id, data.task, path))
    return files
