"""A run killed with SIGKILL and resumed ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedmtl.checkpoint import CHECKPOINT_FILE
from fedmtl.results import METRICS_FILE
from tests.run_reference import final_arrays

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 4


def _command(output_dir: Path, strategy: str) -> list[str]:
    settings = {
        "num-clients": 4,
        "tasks": '["digit", "parity"]',
        "num-rounds": ROUNDS,
        "fraction-train": 0.5,  # sampling must resume exactly too
        "strategy": f'"{strategy}"',
        "checkpoint-every": 1,
        "output-dir": f'"{output_dir}"',
        "round-timeout-s": 120.0,
    }
    command = [sys.executable, "-m", "fedmtl", "simulate", "digits"]
    for key, value in settings.items():
        command += ["--set", f"{key}={value}"]
    return command


def _stop_ray() -> None:
    ray = Path(sys.executable).parent / "ray"
    subprocess.run([str(ray), "stop", "--force"], capture_output=True, check=False)


def _only_run(output_dir: Path) -> Path:
    runs = [p for p in output_dir.iterdir() if p.is_dir() and p.name != "feature-cache"]
    assert len(runs) == 1, runs
    return runs[0]


def _checkpoint_round(run_dir: Path) -> int:
    try:
        with (run_dir / CHECKPOINT_FILE).open("rb") as fh:
            return int(pickle.load(fh)["checkpoint"].server_round)
    except (FileNotFoundError, EOFError, pickle.UnpicklingError):
        return 0


def _kill_after_checkpoint(output_dir: Path, strategy: str, kill_after: int) -> Path:
    process = subprocess.Popen(
        _command(output_dir, strategy),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            runs = list(output_dir.glob("digits-*")) if output_dir.exists() else []
            if runs and _checkpoint_round(runs[0]) >= kill_after:
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        process.wait(timeout=60)
        _stop_ray()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return _only_run(output_dir)


def _records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for record in records:
        record.pop("time")
        for row in record["rejected"] + record["failures"]:
            row.pop("node-id")  # random per connection; the client id names the client
    return records


@pytest.mark.parametrize("strategy", ["fedavg", "fedadam"])
def test_killed_and_resumed_run_matches_the_uninterrupted_one(
    tmp_path: Path, strategy: str
) -> None:
    # Prepare: the uninterrupted reference
    reference = subprocess.run(
        _command(tmp_path / "reference", strategy), cwd=ROOT, capture_output=True, check=False
    )
    _stop_ray()
    assert reference.returncode == 0, reference.stdout.decode()[-3000:]
    expected = _only_run(tmp_path / "reference")
    # Execute: SIGKILL during round 3 (after round 2's checkpoint), then resume
    killed = _kill_after_checkpoint(tmp_path / "killed", strategy, kill_after=2)
    assert len(_records(killed)) < ROUNDS + 1
    resumed = subprocess.run(
        [sys.executable, "-m", "fedmtl", "simulate", "--resume", str(killed)],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    _stop_ray()
    assert resumed.returncode == 0, resumed.stdout.decode()[-3000:]
    # Assert: every round's per-client metrics and the final weights are identical
    assert [r["round"] for r in _records(killed)] == list(range(ROUNDS + 1))
    assert _records(killed) == _records(expected)
    want, got = final_arrays(expected), final_arrays(killed)
    assert sorted(got) == sorted(want) and want
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
