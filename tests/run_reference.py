"""Shared by the end-to-end tests: an in-process reference of a deployment, a run's final arrays."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from fedmtl.config import config_from_run_config
from fedmtl.deploy.local import LocalFederation
from fedmtl.results import RunDirectory
from fedmtl.server_app import run_server
from tests.inprocess_grid import InProcessGrid, device_context


def in_process_reference(federation: LocalFederation, directory: Path) -> Path:
    """The deployment's federation run in this process (same config, files, code); its run dir."""
    cfg = config_from_run_config(federation.run_config())
    cfg = dataclasses.replace(cfg, output_dir=str(directory))
    contexts = {
        100 + i: device_context(100 + i, device.node_config(directory / f"state-{i}"))
        for i, device in enumerate(federation.devices)
    }
    torch.set_num_threads(1)  # as in the ClientApp
    run = RunDirectory.create(cfg)
    run_server(InProcessGrid(contexts, cfg), cfg, run)
    return run.path


def final_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    """Every array of a run's ``final/*.npz``, keyed ``<file stem>/<entry>``."""
    arrays = {}
    for path in sorted((run_dir / "final").glob("*.npz")):
        with np.load(path) as data:
            arrays.update({f"{path.stem}/{k}": data[k] for k in data.files})
    return arrays
