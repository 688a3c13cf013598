"""Interference diagnostics: the cosine of task groups' mean shared-scope updates, per round.

The pure function is checked against hand computations; the round record, the
report table and the heatmap through a small in-process run (no Ray).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fedmtl.records import NDArrays
from fedmtl.results import RoundRecord, RunDirectory
from fedmtl.results.plots import plot_task_similarity, write_run_plots
from fedmtl.results.similarity import mean_task_similarity, task_similarity_table
from fedmtl.server_app import run_server
from strategies.interference import nested_pairs, task_update_cosines
from tests.e2e_helpers import small
from tests.inprocess_grid import InProcessGrid, device_context

SENT: NDArrays = {"w": np.array([1.0, 1.0], np.float32), "steps": np.array([5], np.int64)}


def _reply(w: list[float], steps: int = 5) -> NDArrays:
    return {"w": np.array(w, np.float32), "steps": np.array([steps], np.int64)}


# --------------------------------------------------------------------------- #
# The pure function
# --------------------------------------------------------------------------- #


def test_orthogonal_opposite_and_identical_updates() -> None:
    # updates (reply - sent): a = [1, 0], b = [0, 2], c = [-3, 0], d = [2, 0]
    replies = {
        "a": [(_reply([2, 1]), 1.0)],
        "b": [(_reply([1, 3]), 1.0)],
        "c": [(_reply([-2, 1]), 1.0)],
        "d": [(_reply([3, 1]), 1.0)],
    }
    cos = task_update_cosines(SENT, replies)
    assert cos[("a", "b")] == pytest.approx(0.0)
    assert cos[("a", "c")] == pytest.approx(-1.0)
    assert cos[("a", "d")] == pytest.approx(1.0)
    assert cos[("b", "c")] == pytest.approx(0.0)
    assert sorted(cos) == [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]


def test_a_group_mean_is_weighted_by_examples() -> None:
    # a: updates [1, 0] (1 example) and [0, 1] (3 examples) -> mean [0.25, 0.75];
    # b: [1, 0]. cos = 0.25 / sqrt(0.25^2 + 0.75^2) = 0.25 / sqrt(0.625).
    replies = {
        "a": [(_reply([2, 1]), 1.0), (_reply([1, 2]), 3.0)],
        "b": [(_reply([2, 1]), 10.0)],
    }
    expected = 0.25 / math.sqrt(0.625)
    assert task_update_cosines(SENT, replies) == {("a", "b"): pytest.approx(expected)}


def test_integer_entries_are_left_out() -> None:
    # If "steps" (int) counted, the updates [1, 0, 100] and [0, 1, 100] would be nearly parallel.
    replies = {"a": [(_reply([2, 1], steps=105), 1.0)], "b": [(_reply([1, 2], steps=105), 1.0)]}
    assert task_update_cosines(SENT, replies)[("a", "b")] == pytest.approx(0.0)


def test_a_zero_update_is_not_reported_and_does_not_crash() -> None:
    replies = {
        "a": [(_reply([2, 1]), 1.0)],
        "b": [(_reply([1, 3]), 1.0)],
        "still": [(_reply([1, 1]), 1.0)],  # moved nothing
        "cancel": [(_reply([2, 1]), 1.0), (_reply([0, 1]), 1.0)],  # mean update 0
        "weightless": [(_reply([5, 5]), 0.0)],
        "empty": [],
    }
    assert task_update_cosines(SENT, replies) == {("a", "b"): pytest.approx(0.0)}


def test_a_single_task_or_none_gives_nothing() -> None:
    assert task_update_cosines(SENT, {"a": [(_reply([2, 1]), 1.0)]}) == {}
    assert task_update_cosines(SENT, {}) == {}


def test_pairs_nest_by_first_task() -> None:
    pairs = {("a", "c"): -1.0, ("a", "b"): 0.5, ("b", "c"): 0.0}
    assert nested_pairs(pairs) == {"a": {"b": 0.5, "c": -1.0}, "b": {"c": 0.0}}


# --------------------------------------------------------------------------- #
# The round record, the report's summary
# --------------------------------------------------------------------------- #


def test_a_record_round_trips_its_task_similarity() -> None:
    record = RoundRecord(round=2, task_similarity={"a": {"b": 0.25, "c": -0.5}})
    line = json.loads(json.dumps(record.to_json()))
    assert line["task-similarity"] == {"a": {"b": 0.25, "c": -0.5}}
    assert RoundRecord.from_json(line) == record


def test_an_older_record_without_the_key_reads_back_empty_and_writes_none() -> None:
    record = RoundRecord.from_json({"round": 1})
    assert record.task_similarity == {}
    assert "task-similarity" not in record.to_json()
    bad = {"round": 1, "task-similarity": {"a": {"b": float("nan"), "c": "x"}, "d": 3}}
    assert RoundRecord.from_json(bad).task_similarity == {}


def test_the_summary_is_the_mean_over_rounds_reporting_a_pair() -> None:
    records = [
        RoundRecord(round=0),
        RoundRecord(round=1, task_similarity={"a": {"b": 0.2, "c": -1.0}}),
        RoundRecord(round=2, task_similarity={"a": {"b": 0.6}}),
    ]
    assert mean_task_similarity(records) == {
        ("a", "b"): pytest.approx(0.4),
        ("a", "c"): pytest.approx(-1.0),
    }
    lines = task_similarity_table(records)
    assert "mean over 2 training rounds" in lines[0]
    assert lines[2:] == [
        "| task | a | b | c |",
        "|:---|---:|---:|---:|",
        "| a | 1.000 | 0.400 | -1.000 |",
        "| b | 0.400 | 1.000 | - |",
        "| c | -1.000 | - | 1.000 |",
    ]


def test_no_pair_gives_no_table_and_no_heatmap(tmp_path: Path) -> None:
    records = [RoundRecord(round=1)]
    assert task_similarity_table(records) == []
    assert plot_task_similarity(records, tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- #
# A whole run, in process
# --------------------------------------------------------------------------- #


def test_a_run_records_reports_and_draws_task_similarity(
    tmp_path: Path, server_identity: None
) -> None:
    cfg = small(tmp_path, **{"num-clients": 3})  # digit, parity, ge5: one client each
    contexts = {100 + c: device_context(100 + c, {"partition-id": c}) for c in range(3)}
    run = RunDirectory.create(cfg)
    run_server(InProcessGrid(contexts, cfg), cfg, run)  # type: ignore[arg-type]

    records = run.rounds()
    assert [r.task_similarity for r in records if r.round == 0] == [{}]
    trained = [r for r in records if r.round >= 1]
    assert len(trained) == 2
    for record in trained:
        pairs = {(a, b): x for a, row in record.task_similarity.items() for b, x in row.items()}
        assert sorted(pairs) == [("digit", "ge5"), ("digit", "parity"), ("ge5", "parity")]
        assert all(-1.0 <= x <= 1.0 for x in pairs.values())
    raw = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert raw[1]["task-similarity"] == {a: dict(r) for a, r in trained[0].task_similarity.items()}

    mean = mean_task_similarity(records)
    expected = (
        trained[0].task_similarity["digit"]["parity"]
        + trained[1].task_similarity["digit"]["parity"]
    ) / 2
    assert mean[("digit", "parity")] == pytest.approx(expected)
    report = (run.path / "report.md").read_text()
    assert "Task similarity" in report
    assert f"| digit | 1.000 | {mean[('digit', 'ge5')]:.3f} | {expected:.3f} |" in report
    heatmap = run.path / "plots" / "task-similarity.png"
    assert heatmap.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert heatmap in write_run_plots(run.path)
