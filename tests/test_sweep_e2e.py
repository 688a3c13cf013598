"""Sweeps on Ray: the CLI's acceptance command at tiny size, and the notebook example."""

from __future__ import annotations

import csv
import runpy
import statistics
from pathlib import Path

import pytest

from fedmtl.cli import main
from fedmtl.results import read_metrics
from fedmtl.results.sweep import FINISHED, SweepManifest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_sweep_cli_runs_the_grid_writes_the_table_and_a_repeat_runs_nothing(
    tmp_path: Path,
) -> None:
    # Execute: the acceptance command's shape (two swept keys), one seed, tiny runs
    argv = [
        "sweep", "digits", "--grid", "dirichlet-alpha=[0.1,1.0]",
        "--grid", "strategy=[fedper]", "--seeds", "0", "--output-dir", str(tmp_path),
        "--set", "num-clients=2", "--set", "num-rounds=1", "--set", 'tasks=["digit"]',
        "--set", "max-examples-per-task=100",
    ]  # fmt: skip
    assert main(argv) == 0
    # Assert: 4 finished runs, and the table's numbers are the runs' metrics.jsonl
    (folder,) = tmp_path.iterdir()
    manifest = SweepManifest.read(folder)
    assert [r.state for r in manifest.runs] == [FINISHED] * 2
    rows = list(csv.DictReader((folder / "sweep.csv").open()))
    assert len(rows) == 2
    for run in manifest.runs:
        assert run.run_dir is not None
        last = read_metrics(run.run_dir / "metrics.jsonl")[-1]["evaluate"]["clients"]
        accuracy = statistics.mean(c["accuracy"] for c in last)
        (row,) = [
            r for r in rows
            if float(r["dirichlet-alpha"]) == run.values["dirichlet-alpha"]
            and r["strategy"] == run.values["strategy"]
        ]  # fmt: skip
        assert float(row["mean"]) == pytest.approx(accuracy)
        assert float(row["worst"]) == pytest.approx(min(c["accuracy"] for c in last))
    assert (folder / "plots" / "accuracy-vs-dirichlet-alpha.png").stat().st_size > 0
    # Execute again: nothing runs (each slot still holds its one run directory)
    runs = sorted(p for r in manifest.runs for p in r.slot.iterdir())
    assert main(argv) == 0
    assert sorted(p for r in manifest.runs for p in r.slot.iterdir()) == runs
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


def test_notebook_example_runs_and_its_dataframes_equal_metrics_jsonl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pandas")
    monkeypatch.setenv("FEDMTL_EXAMPLE_OUTPUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # Execute: the example, as a script
    namespace = runpy.run_path(str(ROOT / "examples" / "notebook_sweep.py"), run_name="__main__")
    # Assert: its table and per-round rows are the runs' metrics.jsonl
    sweep, table = namespace["sweep"], namespace["table"]
    assert len(table) == 2  # two alphas, one task
    for run in sweep.runs.to_dict("records"):
        assert run["state"] == FINISHED
        raw = read_metrics(Path(run["run-dir"]) / "metrics.jsonl")
        mine = sweep.rounds[
            (sweep.rounds["dirichlet-alpha"] == run["dirichlet-alpha"])
            & (sweep.rounds["phase"] == "evaluate")
        ]
        assert mine["round"].tolist() == [r["round"] for r in raw]
        expected = [r["evaluate"]["tasks"]["digit"]["accuracy-mean"] for r in raw]
        assert mine["accuracy-mean"].tolist() == expected
        (row,) = table[table["dirichlet-alpha"] == run["dirichlet-alpha"]].to_dict("records")
        assert row["mean"] == expected[-1] and row["seeds"] == 1
    assert Path(namespace["figure_path"]).stat().st_size > 0
