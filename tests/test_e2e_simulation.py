"""End-to-end runs through Flower's run_simulation on Ray (marked slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedmtl.panels import evaluation_panel, holdout_clients
from fedmtl.results import read_metrics
from fedmtl.simulation import simulate
from tests.e2e_helpers import make_spy, small

pytestmark = pytest.mark.slow


def test_heads_never_travel_and_persist_on_the_client(tmp_path: Path) -> None:
    # Prepare
    cfg = small(tmp_path)
    spy_dir = tmp_path / "spy"
    spy_dir.mkdir()
    # Execute
    run_dir = simulate(cfg, client_mods=[make_spy(spy_dir)])
    # Assert: replies hold the shared scope only
    logs = {p.stem: [json.loads(x) for x in p.read_text().splitlines()] for p in spy_dir.iterdir()}
    assert len(logs) == 3
    for entries in logs.values():
        assert [e["round"] for e in sorted(entries, key=lambda e: e["round"])] == [1, 2]
        for entry in entries:
            assert entry["arrays"], "train reply without shared arrays"
            assert all(k.startswith("backbone.") for k in entry["arrays"])
            assert not any("num_batches_tracked" in k for k in entry["arrays"])
            assert entry["task-arrays"] == []
            assert "task-arrays" not in entry["records"]
        by_round = {e["round"]: e for e in entries}
        # the head trained in round 1 is the head round 2 starts from, and it did change
        assert by_round[1]["head-before"] is None
        assert by_round[1]["head-after"] is not None
        assert by_round[2]["head-before"] == by_round[1]["head-after"]
        assert by_round[2]["head-after"] != by_round[2]["head-before"]
    # Assert: the run directory holds per-task, per-client metrics for rounds 0..2
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["round"] for r in records] == [0, 1, 2]
    final = records[-1]["evaluate"]
    assert sorted(final["tasks"]) == ["digit", "ge5", "parity"]
    assert len(final["clients"]) == 3
    assert all(0.0 <= c["accuracy"] <= 1.0 for c in final["clients"])
    assert records[1]["comm"]["bytes-up"] > 0 and records[1]["comm"]["bytes-down"] > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 2
    assert (run_dir / "plots" / "accuracy.png").stat().st_size > 0
    shared = np.load(run_dir / "final" / "shared.npz")
    assert sorted(shared.files) == sorted(logs["client-0"][0]["arrays"])


def test_task_scope_travels_per_task_only(tmp_path: Path) -> None:
    # Prepare: heads task-shared; two clients per task for two tasks
    cfg = small(
        tmp_path,
        **{
            "tasks": ["digit", "parity"],
            "num-clients": 4,
            "scope-task": ["heads.*"],
            "scope-local": ["*.num_batches_tracked"],
        },
    )
    spy_dir = tmp_path / "spy"
    spy_dir.mkdir()
    # Execute
    run_dir = simulate(cfg, client_mods=[make_spy(spy_dir)])
    # Assert
    for path in spy_dir.iterdir():
        for entry in map(json.loads, path.read_text().splitlines()):
            task = entry["task"]
            assert entry["task-arrays"] == [f"heads.{task}.bias", f"heads.{task}.weight"]
            assert not any(k.startswith("heads.") for k in entry["arrays"])
    final = run_dir / "final"
    assert sorted(p.name for p in final.iterdir()) == [
        "shared.npz",
        "task-digit.npz",
        "task-parity.npz",
    ]
    records = read_metrics(run_dir / "metrics.jsonl")
    assert records[-1]["rejected"] == []
    assert records[-1]["evaluate"]["tasks"]["digit"]["num-clients"] == 2


@pytest.mark.parametrize(
    "strategy",
    [
        "fedadam",
        "conflict-averse",
        "clustered",
        "fedrep",
        "fedbabu",
        "ditto",
        "local-only",
        "tests.example_plugin:HalfStepFedAvg",
    ],
)
def test_stock_and_custom_strategies_run(tmp_path: Path, strategy: str) -> None:
    cfg = small(tmp_path, **{"strategy": strategy, "num-clients": 2, "tasks": ["digit", "ge5"]})
    run_dir = simulate(cfg)
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["round"] for r in records] == [0, 1, 2]
    assert not any(r["skipped"] for r in records)
    assert len(records[-1]["evaluate"]["clients"]) == 2


def test_panel_holdout_global_view_and_disk_state_end_to_end(tmp_path: Path) -> None:
    # Prepare
    cfg = small(
        tmp_path,
        **{
            "num-clients": 6,
            "tasks": ["digit", "parity"],
            "num-rounds": 3,
            "holdout-clients": 2,
            "evaluate-panel": 2,
            "evaluate-every": 2,
            "global-view-epochs": 2,
            "client-state": "disk",
        },
    )
    held_out, panel = holdout_clients(cfg), evaluation_panel(cfg)
    assert panel is not None
    # Execute
    run_dir = simulate(cfg)
    # Assert: held-out clients never train; the panel alone is evaluated, every 2nd round
    records = read_metrics(run_dir / "metrics.jsonl")
    evaluated = {r["round"]: {c["client-id"] for c in r["evaluate"]["clients"]} for r in records}
    assert evaluated == {0: panel, 1: set(), 2: panel, 3: panel}
    trained = {c["client-id"] for r in records for c in r["train"]["clients"]}
    assert trained == set(range(6)) - held_out
    assert all("global-accuracy" in c for c in records[-1]["evaluate"]["clients"])
    # Assert: unseen clients were tested at the end, apart from the rounds
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {c["client-id"] for c in summary["unseen"]["clients"]} == held_out
    assert "Unseen clients" in (run_dir / "report.md").read_text()
    # Assert: client state lives on disk, one folder per trained client
    folders = {int(p.name.split("-")[1]) for p in (run_dir / "client-state").iterdir()}
    assert folders == trained
