"""Issue 13 acceptance: robust rules protect a task-shared head from sign-flip attackers.

Whole digits runs in process (the real ServerApp and ClientApp code, the
simulation's attack mod, no Ray): ten clients on one task whose head is
task-shared (``scope-task``), two of them (``attack-fraction`` 0.2) sending
sign-flipped updates of both scopes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fedmtl.attacks import attack_mod
from fedmtl.config import ExperimentConfig, load_experiment
from fedmtl.panels import attackers
from fedmtl.results import RunDirectory
from fedmtl.server_app import run_server
from tests.inprocess_grid import InProcessGrid, device_context

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, name: str, **overrides: Any) -> ExperimentConfig:
    values: dict[str, Any] = {
        "num-clients": 10,
        "tasks": ["digit"],
        "partitioner": "iid",
        "num-rounds": 4,
        "scope-task": ["heads.*"],
        "scope-shared": ["backbone.*"],
        "scope-local": ["*.num_batches_tracked"],
        "output-dir": str(tmp_path / name),
        "round-timeout-s": 120.0,
    }
    values.update(overrides)
    return load_experiment("digits", values)


def honest_accuracy(cfg: ExperimentConfig, bad: frozenset[int]) -> float:
    """Mean test accuracy of the clients not in ``bad`` after the last round (in process).

    ``bad`` is the attacked runs' attackers, so a clean run is measured on the same
    honest clients. An honest client whose evaluation reply was rejected (a
    diverged model gives a NaN loss) counts as accuracy 0.
    """
    torch.set_num_threads(1)
    contexts = {
        100 + c: device_context(100 + c, {"partition-id": c}) for c in range(cfg.num_clients)
    }
    mods = [attack_mod(cfg)] if cfg.attack != "none" else []
    run = RunDirectory.create(cfg)
    run_server(InProcessGrid(contexts, cfg, mods=mods), cfg, run)  # type: ignore[arg-type]
    last = run.rounds()[-1]
    assert last.round == cfg.num_rounds and not last.skipped
    scores = {row.client_id: row.metrics["accuracy"] for row in last.evaluate.clients}
    honest = [c for c in range(cfg.num_clients) if c not in bad]
    return 100.0 * sum(scores.get(c, 0.0) for c in honest) / len(honest)


ATTACK = {"attack": "sign-flip", "attack-fraction": 0.2}


def test_fedmedian_keeps_a_task_shared_head_under_sign_flip(
    tmp_path: Path, server_identity: None
) -> None:
    bad = attackers(_config(tmp_path, "x", **ATTACK))
    clean = honest_accuracy(_config(tmp_path, "clean", strategy="fedmedian"), bad)
    median = honest_accuracy(_config(tmp_path, "median", strategy="fedmedian", **ATTACK), bad)
    fedavg = honest_accuracy(_config(tmp_path, "fedavg", strategy="fedavg", **ATTACK), bad)
    # the median on the backbone only: the head's plain mean lets the attackers in
    mean_heads = honest_accuracy(
        _config(
            tmp_path, "mean-heads", strategy="fedmedian", **{"task-aggregation": "mean"}, **ATTACK
        ),
        bad,
    )
    print(
        f"clean {clean:.1f}, median {median:.1f}, fedavg {fedavg:.1f}, mean heads {mean_heads:.1f}"
    )
    assert len(bad) == 2
    assert median >= clean - 5.0, (clean, median)
    assert fedavg < clean - 5.0, (clean, fedavg)
    assert mean_heads < clean - 5.0, (clean, mean_heads)
