"""The Python API without Ray: run (fake simulate), load, sweep, load_sweep; pandas or not."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import fedmtl
from fedmtl.assembly import load_run
from fedmtl.config import ConfigError, ExperimentConfig
from fedmtl.results import read_metrics
from tests.test_sweep import GRID, TINY, FakeSimulate, write_fake_run


def records(frame: Any) -> list[dict[str, Any]]:
    """A table as a list of dicts (a DataFrame or already a list)."""
    return frame if isinstance(frame, list) else frame.to_dict("records")


def test_load_gives_every_rounds_task_and_client_numbers_of_metrics_jsonl(tmp_path: Path) -> None:
    # Prepare
    cfg = load_run("digits", {**TINY, "output-dir": str(tmp_path)})
    run_dir = write_fake_run(cfg, [0.7, 0.9])
    # Execute
    result = fedmtl.load(run_dir)
    # Assert
    assert result.ok and result.run_dir == run_dir and result.config["num-clients"] == 2
    assert result.summary["final"]["digit"]["accuracy-mean"] == pytest.approx(0.8)
    raw = read_metrics(run_dir / "metrics.jsonl")
    tasks, clients = records(result.rounds), records(result.clients)
    expected_tasks = [
        (r["round"], phase, task, stats)
        for r in raw
        for phase in ("evaluate", "train")
        for task, stats in r[phase]["tasks"].items()
    ]
    assert len(tasks) == len(expected_tasks) == 3  # round 0 evaluates; round 1 both phases
    for row, (number, phase, task, stats) in zip(tasks, expected_tasks, strict=True):
        assert (row["round"], row["phase"], row["task"]) == (number, phase, task)
        assert {k: row[k] for k in stats} == stats
    expected_clients = [
        (r["round"], phase, c) for r in raw for phase in ("evaluate", "train")
        for c in r[phase]["clients"]
    ]  # fmt: skip
    assert len(clients) == len(expected_clients) == 6
    for row, (number, phase, client) in zip(clients, expected_clients, strict=True):
        assert (row["round"], row["phase"]) == (number, phase)
        assert {k: row[k] for k in client} == client


def test_without_pandas_tables_are_lists_of_dicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_run("digits", {**TINY, "output-dir": str(tmp_path)})
    run_dir = write_fake_run(cfg, [0.7, 0.9])
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    result = fedmtl.load(run_dir)
    assert isinstance(result.rounds, list) and isinstance(result.clients, list)
    assert result.rounds[-1]["accuracy-mean"] == pytest.approx(0.8)


def test_with_pandas_tables_are_dataframes(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    cfg = load_run("digits", {**TINY, "output-dir": str(tmp_path)})
    result = fedmtl.load(write_fake_run(cfg, [0.7, 0.9]))
    assert isinstance(result.rounds, pd.DataFrame)
    final = result.rounds.query("phase == 'evaluate' and round == 1")
    assert final["accuracy-mean"].tolist() == pytest.approx([0.8])


def test_run_takes_python_names_and_kebab_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the simulation runtime replaced by a fake
    import fedmtl.simulation

    seen: list[ExperimentConfig] = []

    def fake(cfg: ExperimentConfig) -> Path:
        seen.append(cfg)
        return write_fake_run(cfg, [0.5, 0.6])

    monkeypatch.setattr(fedmtl.simulation, "simulate", fake)
    # Execute
    result = fedmtl.run(
        "digits", num_clients=2, num_rounds=1, tasks=["digit"], **{"output-dir": str(tmp_path)}
    )
    from_mapping = fedmtl.run({"num_clients": 3, "output-dir": str(tmp_path)}, seed=4)
    # Assert
    assert (seen[0].num_clients, seen[0].num_rounds, seen[0].tasks) == (2, 1, ("digit",))
    assert result.run_dir.parent == tmp_path and result.ok
    assert (seen[1].num_clients, seen[1].seed) == (3, 4)
    assert from_mapping.summary["final"]["digit"]["accuracy-mean"] == pytest.approx(0.55)
    with pytest.raises(ConfigError, match="'num-roundz'"):
        fedmtl.run("digits", num_roundz=1)
    assert len(seen) == 2


def test_sweep_and_load_sweep_read_the_table_and_every_runs_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: fedmtl.sweep runs through fedmtl.sweeps' default simulate; replace it
    import fedmtl.sweeps

    simulate = FakeSimulate()
    monkeypatch.setattr(fedmtl.sweeps, "default_simulate", lambda: simulate)
    # Execute
    result = fedmtl.sweep(
        "digits", dict(GRID), seeds=[0, 1], output_dir=tmp_path, num_clients=2, num_rounds=1,
        tasks=["digit"],
    )  # fmt: skip
    loaded = fedmtl.load_sweep(result.sweep_dir)
    # Assert
    assert len(simulate.calls) == 8 and result.keys == ("dirichlet-alpha", "strategy")
    table = records(loaded.table)
    assert records(result.table) == table and len(table) == 4
    runs = records(loaded.runs)
    assert {r["state"] for r in runs} == {"finished"} and len(runs) == 8
    rounds = records(loaded.rounds)
    for run in runs:  # every run's rows carry its point and seed, and equal its metrics.jsonl
        mine = [r for r in rounds if (r["dirichlet-alpha"], r["strategy"], r["seed"]) ==
                (run["dirichlet-alpha"], run["strategy"], run["seed"])]  # fmt: skip
        raw = read_metrics(Path(run["run-dir"]) / "metrics.jsonl")
        final = [r for r in mine if r["round"] == 1 and r["phase"] == "evaluate"]
        assert final[0]["accuracy-mean"] == raw[-1]["evaluate"]["tasks"]["digit"]["accuracy-mean"]
    with pytest.raises(FileNotFoundError, match=r"sweep\.json"):
        fedmtl.load_sweep(tmp_path)
