"""``fedmtl compare`` on Ray: its table is recomputed from the runs' per-client metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fedmtl.cli import main
from fedmtl.metrics import summarize_by_task
from fedmtl.results import read_metrics
from fedmtl.results.compare import CENTRALIZED, LOCAL_ONLY

pytestmark = pytest.mark.slow


def test_compare_runs_strategies_with_references_and_its_numbers_reproduce(
    tmp_path: Path,
) -> None:
    # Execute: the CLI, as a user runs it
    code = main(
        [
            "compare", "digits", "--strategies", "fedavg", "--seeds", "0",
            "--output-dir", str(tmp_path),
            "--set", "num-clients=4", "--set", "num-rounds=2", "--set", 'tasks=["digit", "parity"]',
        ]
    )  # fmt: skip
    # Assert
    assert code == 0
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("compare-")]
    results = json.loads((folder / "results.json").read_text())
    assert results["strategies"] == ["fedavg", LOCAL_ONLY, CENTRALIZED]
    for strategy in ("fedavg", LOCAL_ONLY):
        entry = results["runs"][strategy]["0"]
        last = read_metrics(Path(entry["run-dir"]) / "metrics.jsonl")[-1]
        assert entry["final"] == summarize_by_task(last["evaluate"]["clients"])
    rows = list(csv.DictReader((folder / "compare.csv").open()))
    assert {(r["strategy"], r["task"]) for r in rows} == {
        (s, t) for s in ("fedavg", LOCAL_ONLY, CENTRALIZED) for t in ("digit", "parity")
    }
    fedavg_digit = next(r for r in rows if r["strategy"] == "fedavg" and r["task"] == "digit")
    local = results["runs"][LOCAL_ONLY]["0"]["final"]["digit"]["accuracy-mean"]
    mine = results["runs"]["fedavg"]["0"]["final"]["digit"]["accuracy-mean"]
    assert float(fedavg_digit["gain"]) == pytest.approx(mine - local)
    assert (folder / "plots" / "accuracy-rounds.png").stat().st_size > 0
