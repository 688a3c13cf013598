"""`fedmtl simulate` with central DP and a budget, on Ray (marked slow): a clean stop, exit 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedmtl.checkpoint import load_checkpoint
from fedmtl.results import METRICS_FILE, read_metrics
from strategies.privacy import accountant_epsilon

pytestmark = pytest.mark.slow
pytest.importorskip("dp_accounting")
Z, CLIENTS, DELTA = 2.0, 3, 1e-5


def test_simulate_stops_at_the_privacy_budget_with_results_and_a_checkpoint(
    tmp_path: Path,
) -> None:
    # Prepare: a budget between epsilon after 2 and after 3 rounds, 5 rounds asked for
    budget = (
        accountant_epsilon(Z, CLIENTS, CLIENTS, DELTA, 2)
        + accountant_epsilon(Z, CLIENTS, CLIENTS, DELTA, 3)
    ) / 2
    settings = {
        "num-clients": CLIENTS,
        "num-rounds": 5,
        "partitioner": '"iid"',
        "max-examples-per-task": 60,
        "dp": '"central"',
        "client-weighting": '"uniform"',
        "dp-noise-multiplier": Z,
        "dp-clip": 1.0,
        "dp-max-epsilon": budget,
        # batch-norm statistics stay local under DP (check_private_scopes)
        "scope-local": '["heads.*", "*.num_batches_tracked", "*.running_mean", "*.running_var"]',
        "checkpoint-every": 1,
        "output-dir": f'"{tmp_path}"',
        "round-timeout-s": 120.0,
    }
    command = [sys.executable, "-m", "fedmtl", "simulate", "digits"]
    for key, value in settings.items():
        command += ["--set", f"{key}={value}"]

    # Execute
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)

    # Assert: exit 0, rounds 1-2 with the accountant's epsilon, the reason everywhere
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stopped: privacy budget: round 3 would take epsilon" in done.stdout
    assert "eps " in done.stdout  # the progress line
    [run] = [p for p in tmp_path.iterdir() if p.is_dir() and p.name != "feature-cache"]
    records = read_metrics(run / METRICS_FILE)
    assert [r["round"] for r in records] == [0, 1, 2]
    for record in records[1:]:
        expected = accountant_epsilon(Z, CLIENTS, CLIENTS, DELTA, record["round"])
        assert record["privacy"]["epsilon"] == pytest.approx(expected, abs=1e-9)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["stopped"].startswith("privacy budget")
    assert load_checkpoint(run).server_round == 2
    assert (run / "final" / "shared.npz").exists()
    assert "differential privacy after 2 round(s)" in (run / "report.md").read_text()
