"""A run with ``trackers = ["tensorboard"]``: its event files hold metrics.jsonl's numbers.

In process (fast, through ``run_server`` and the in-process grid) and through
``fedmtl simulate`` on Ray (slow).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmtl.results import RoundRecord, RunDirectory, read_rounds
from fedmtl.server_app import run_server
from tests.e2e_helpers import small
from tests.inprocess_grid import InProcessGrid, device_context

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None,
    reason="needs the 'tracking' extra: pip install -e '.[tracking]'",
)
ROOT = Path(__file__).resolve().parent.parent


def _assert_events_equal_metrics(run_dir: Path, rounds: int) -> None:
    """Every round's per-task mean (and worst) in the event files equals metrics.jsonl's."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    records: list[RoundRecord] = read_rounds(run_dir / "metrics.jsonl")
    assert [r.round for r in records] == list(range(rounds + 1))
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    checked = 0
    for record in records:
        for task, stats in record.evaluate.tasks.items():
            for stat in ("accuracy-mean", "loss-mean", "accuracy-worst"):
                tag = f"evaluate/{task}/{stat}"
                assert tag in tags, tag
                values = [e.value for e in events.Scalars(tag) if e.step == record.round]
                assert values == [np.float32(stats[stat])], (tag, record.round, values)
                checked += 1
        if record.round_s is not None:
            (seconds,) = [e.value for e in events.Scalars("time/round-s") if e.step == record.round]
            assert seconds == np.float32(record.round_s)
    assert checked == 3 * sum(len(r.evaluate.tasks) for r in records) > 0


def test_a_run_mirrors_every_round_to_tensorboard(tmp_path: Path, server_identity: None) -> None:
    # Prepare
    torch.set_num_threads(1)
    cfg = small(tmp_path, **{"num-clients": 4, "trackers": ["tensorboard"]})
    contexts = {100 + c: device_context(100 + c, {"partition-id": c}) for c in range(4)}
    run = RunDirectory.create(cfg)
    # Execute
    run_server(InProcessGrid(contexts, cfg), cfg, run)
    # Assert
    _assert_events_equal_metrics(run.path, cfg.num_rounds)


@pytest.mark.slow
def test_fedmtl_simulate_with_the_tensorboard_tracker(tmp_path: Path) -> None:
    # Execute: the CLI, as a user runs it (tiny: 2 clients, 1 round)
    command = [
        sys.executable, "-m", "fedmtl", "simulate", "digits",
        "--set", "num-clients=2", "--set", "num-rounds=1", "--set", 'tasks=["digit", "parity"]',
        "--set", "max-examples-per-task=200", "--set", 'trackers=["tensorboard"]',
        "--set", f"output-dir={str(tmp_path)!r}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # Assert
    (run_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("digits-")]
    _assert_events_equal_metrics(run_dir, 1)
