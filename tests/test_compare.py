"""Comparison tables, the centralized reference and ``fedmtl report`` (no Ray)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fedmtl.centralized import train_centralized
from fedmtl.cli import main
from fedmtl.compare import run_comparison
from fedmtl.config import ExperimentConfig, build_config
from fedmtl.metrics import ClientRow, summarize_by_task
from fedmtl.results import PhaseRecord, RoundRecord, RunDirectory
from fedmtl.results.compare import (
    CENTRALIZED,
    LOCAL_ONLY,
    comparison_rows,
    format_csv,
    format_markdown,
)


def _clients(task: str, accuracies: list[float]) -> list[dict[str, Any]]:
    return [
        {"client-id": i, "task": task, "num-examples": 10, "accuracy": a, "loss": 1 - a}
        for i, a in enumerate(accuracies)
    ]


def _write_run(run_dir: Path, finals: list[list[float]]) -> Path:
    """A run directory whose rounds 0.. evaluate task 'a' clients with these accuracies."""
    run_dir.mkdir(parents=True)
    run = RunDirectory(run_dir)
    for server_round, accuracies in enumerate(finals):
        clients = [ClientRow.from_json(row) for row in _clients("a", accuracies)]
        run.append_metrics(
            RoundRecord(
                round=server_round,
                round_s=1.0,
                elapsed_s=float(server_round),
                bytes_up=0,
                bytes_down=0,
                train=PhaseRecord.of(clients) if server_round else PhaseRecord(),
                evaluate=PhaseRecord.of(clients),
            )
        )
    return run_dir


def test_rows_average_over_seeds_and_gain_is_per_seed_by_hand(tmp_path: Path) -> None:
    # Prepare: two seeds; fedavg's final client accuracies and local-only's
    runs = {
        "fedavg": {"0": [0.6, 0.8], "1": [0.7, 0.9]},  # means 0.7 and 0.8
        LOCAL_ONLY: {"0": [0.5, 0.5], "1": [0.6, 0.8]},  # means 0.5 and 0.7
    }
    results = {
        "seeds": [0, 1],
        "strategies": ["fedavg", LOCAL_ONLY],
        "runs": {
            name: {
                seed: {"final": summarize_by_task(_clients("a", acc))} for seed, acc in s.items()
            }
            for name, s in runs.items()
        },
    }
    # Execute
    rows = {r["strategy"]: r for r in comparison_rows(results)}
    # Assert
    fedavg = rows["fedavg"]
    assert fedavg["accuracy-mean"] == pytest.approx(0.75)  # (0.7 + 0.8) / 2
    assert fedavg["accuracy-mean-sd"] == pytest.approx(0.0707107, rel=1e-5)  # sample sd
    assert fedavg["accuracy-worst"] == pytest.approx(0.65)  # (0.6 + 0.7) / 2
    assert fedavg["accuracy-p10"] == pytest.approx(0.67)  # (0.62 + 0.72) / 2
    assert fedavg["gain"] == pytest.approx(0.15)  # ((0.7-0.5) + (0.8-0.7)) / 2
    assert rows[LOCAL_ONLY]["gain"] == pytest.approx(0.0)
    markdown = format_markdown(list(rows.values()), 2)
    assert "| fedavg | 0.750 ± 0.071 / 0.650 / 0.670 / +0.150 |" in markdown
    parsed = list(csv.DictReader(io.StringIO(format_csv(list(rows.values())))))
    assert [r["strategy"] for r in parsed] == ["fedavg", LOCAL_ONLY]
    assert float(parsed[0]["gain"]) == pytest.approx(0.15)


def test_comparison_reproduces_each_runs_metrics_file(tmp_path: Path) -> None:
    # Prepare: a fake simulate writing a run whose last round we know
    finals = {("fedavg", 0): [0.6, 1.0], (LOCAL_ONLY, 0): [0.5, 0.7]}

    def simulate(cfg: ExperimentConfig) -> Path:
        last = finals[(cfg.strategy, cfg.seed)]
        return _write_run(Path(cfg.output_dir) / cfg.strategy, [[0.1, 0.1], last])

    overrides = {"tasks": ["digit"], "num-clients": 2, "num-rounds": 1}
    # Execute
    folder = run_comparison(
        "digits", ["fedavg", LOCAL_ONLY], [0], overrides, tmp_path, False, simulate
    )
    # Assert: table aggregates recomputed from the clients in metrics.jsonl
    results = json.loads((folder / "results.json").read_text())
    assert results["strategies"] == ["fedavg", LOCAL_ONLY]
    for strategy, accuracies in ((s, a) for (s, _), a in finals.items()):
        run_dir = Path(results["runs"][strategy]["0"]["run-dir"])
        last = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
        recomputed = summarize_by_task(last["evaluate"]["clients"])["a"]
        assert results["runs"][strategy]["0"]["final"]["a"] == recomputed
        assert recomputed["accuracy-mean"] == pytest.approx(sum(accuracies) / 2)
    assert "+0.200" in (folder / "compare.md").read_text()  # 0.8 - 0.6
    assert (folder / "plots" / "final-accuracy.png").stat().st_size > 0
    # `fedmtl report` rebuilds the same table
    (folder / "compare.md").unlink()
    assert main(["report", str(folder)]) == 0
    assert "+0.200" in (folder / "compare.md").read_text()


def test_report_rebuilds_a_runs_tables_and_plots(tmp_path: Path) -> None:
    run_dir = _write_run(tmp_path / "run", [[0.1, 0.3], [0.9, 0.5], [0.6, 0.6]])
    assert main(["report", str(run_dir)]) == 0
    report = (run_dir / "report.md").read_text()
    assert "Final round 2" in report
    assert "| a | 1 | 0.700 |" in report  # best round 1 (mean 0.7), apart from the final 0.6
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final"]["a"]["accuracy-mean"] == pytest.approx(0.6)
    assert (run_dir / "plots" / "accuracy.png").exists()
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_centralized_reference_learns_every_task_and_records_its_choice() -> None:
    torch.set_num_threads(1)
    cfg = build_config({"num-clients": 6, "num-rounds": 2})
    result = train_centralized(cfg)
    assert {row["client-id"] for row in result["clients"]} == set(range(6))
    assert set(result["tasks"]) == {"digit", "parity", "ge5"}
    assert result["learning-rate"] in {0.05, 0.05 * 0.2, 0.05 * 0.04}
    assert result["train-loss"][str(result["learning-rate"])] == min(result["train-loss"].values())
    for stats in result["tasks"].values():
        assert stats["accuracy-mean"] > 0.7
    assert CENTRALIZED == "centralized"
