"""Run an experiment on Flower's Simulation Runtime (Ray backend)."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from flwr.clientapp.typing import Mod

from fedmtl.assembly import resolve_run
from fedmtl.attacks import attack_mod
from fedmtl.checkpoint import load_checkpoint
from fedmtl.client_app import feature_cache_dir, make_client_app
from fedmtl.config import ConfigError, ExperimentConfig
from fedmtl.results import RunDirectory
from fedmtl.run_model import check_run_inputs
from fedmtl.server_app import make_server_app


def visible_gpus() -> int:
    """Number of CUDA devices this process can see (0 without torch CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def backend_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """Ray backend settings: per-client CPU/GPU resources from the experiment."""
    cpus = os.cpu_count() or 1
    if cfg.client_num_cpus > cpus:
        raise ConfigError(
            "client-num-cpus", f"{cfg.client_num_cpus} per client but this machine has {cpus}"
        )
    gpus = visible_gpus()
    if cfg.client_num_gpus > 0 and gpus == 0:
        raise ConfigError(
            "client-num-gpus",
            f"{cfg.client_num_gpus} GPUs per client requested but no CUDA GPU is visible; "
            "set client-num-gpus = 0 to run on CPU",
        )
    if cfg.client_num_gpus > gpus:
        raise ConfigError(
            "client-num-gpus", f"{cfg.client_num_gpus} per client but only {gpus} GPUs exist"
        )
    return {
        "client_resources": {"num_cpus": cfg.client_num_cpus, "num_gpus": cfg.client_num_gpus},
        "init_args": {"num_cpus": cpus, "num_gpus": gpus, "include_dashboard": False},
    }


def simulate(
    cfg: ExperimentConfig,
    run_dir: Path | None = None,
    verbose: bool = False,
    client_mods: list[Mod] | None = None,
    resume: bool = False,
) -> Path:
    """Run ``cfg`` with ``run_simulation`` on Ray; return the run directory.

    ``client_mods`` are Flower client mods added to every ClientApp (tests use
    one to record what leaves the clients); inside them sits the attack mod
    (:func:`fedmtl.attacks.attack_mod`, a pass-through when nobody attacks),
    which only simulation installs. With ``resume``, ``run_dir`` is an
    existing run that saved a checkpoint; it continues from there.
    """
    from flwr.simulation import run_simulation

    cfg = resolve_run(cfg)  # strategy checked, its scope preset applied (idempotent)
    backend = backend_config(cfg)
    checkpoint = None
    if resume:
        if run_dir is None:
            raise ValueError("resume needs the run directory to continue")
        try:
            checkpoint = load_checkpoint(run_dir)
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError("checkpoint-every", str(exc)) from None
    check_run_inputs(cfg)
    run = RunDirectory(run_dir) if run_dir is not None else RunDirectory.create(cfg)
    # Ray workers need not share this process's working directory.
    cfg = dataclasses.replace(
        cfg,
        feature_cache_dir=str(Path(feature_cache_dir(cfg)).resolve()),
        client_state_dir=str(Path(cfg.client_state_dir or run.path / "client-state").resolve()),
    )
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    run_simulation(
        server_app=make_server_app(cfg, run.path, checkpoint),
        client_app=make_client_app(cfg, [*(client_mods or []), attack_mod(cfg)]),
        num_supernodes=cfg.num_clients,
        backend_config=backend,
        verbose_logging=verbose,
    )
    return run.path
