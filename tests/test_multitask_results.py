"""Results of clients holding several tasks: one row per client per task, read everywhere (no Ray).

The synthetic run: tasks ``digit`` (classification, accuracy) and ``value``
(regression, MAE: lower is better). Clients 0 and 1 hold both, client 2 holds
``digit`` only, client 3 ``value`` only; clients report their task-gradient
cosines as ``client-task-similarity``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from fedmtl.cli import main
from fedmtl.metrics import ClientRow, count_clients, summarize_by_task, tasks_by_client
from fedmtl.results import PhaseRecord, RoundRecord, RunDirectory
from fedmtl.results.compare import (
    LOCAL_ONLY,
    client_comparison_rows,
    run_entry,
    write_comparison_report,
    write_comparison_results,
)
from fedmtl.results.similarity import client_similarity_table, clients_holding_both

PNG = b"\x89PNG\r\n\x1a\n"


def _digit(client: int, accuracy: float, examples: int = 10) -> ClientRow:
    metrics = {"num-examples": examples, "loss": 1 - accuracy, "accuracy": accuracy}
    return ClientRow(client, "digit", {**metrics, "macro-f1": accuracy - 0.1})


def _value(client: int, mae: float, examples: int = 10) -> ClientRow:
    metrics = {"num-examples": examples, "loss": mae / 2, "mae": mae, "rmse": mae + 0.5}
    return ClientRow(client, "value", {**metrics, "r2": 1 - mae / 10})


def _final_rows(scale: float = 1.0) -> list[ClientRow]:
    return [
        _digit(0, 0.8, 10),
        _value(0, 2.0 * scale, 10),
        _digit(1, 0.6, 20),
        _value(1, 1.0 * scale, 20),
        _digit(2, 0.7, 30),
        _value(3, 4.0 * scale, 40),
    ]


def _write_run(run_dir: Path, final: list[ClientRow] | None = None) -> Path:
    """Rounds 0 (initial), 1 and 2 (final) of the synthetic run."""
    run_dir.mkdir(parents=True)
    run = RunDirectory(run_dir)
    initial = [_digit(0, 0.1), _value(0, 9.0), _digit(1, 0.2), _value(1, 8.0)]
    middle = [_digit(0, 0.5), _value(0, 1.5), _digit(1, 0.5), _value(1, 1.5), _value(3, 1.5)]
    cosines = {1: {"digit": {"value": -0.5}}, 2: {"digit": {"value": 0.1}}}
    for number, rows in enumerate([initial, middle, final or _final_rows()]):
        run.append_metrics(
            RoundRecord(
                round=number,
                elapsed_s=float(number),
                train=PhaseRecord.of(middle) if number else PhaseRecord(),
                evaluate=PhaseRecord.of(rows),
                client_task_similarity=cosines.get(number, {}),
                client_task_similarity_clients={"digit": {"value": 2}} if number else {},
            )
        )
    return run_dir


def test_counts_are_distinct_clients_and_packed_keys_are_no_metrics() -> None:
    rows = [r.to_json() for r in _final_rows()]
    rows[0]["grad-cosine/digit/value"] = -0.5  # a reply key that is no task metric
    assert count_clients(rows) == 4
    stats = summarize_by_task(rows)
    assert stats["digit"]["num-clients"] == 3 and stats["value"]["num-clients"] == 3
    assert not any("/" in key for task in stats.values() for key in task)
    assert tasks_by_client(_final_rows()) == {
        0: ("digit", "value"),
        1: ("digit", "value"),
        2: ("digit",),
        3: ("value",),
    }


def test_a_record_round_trips_its_client_task_similarity() -> None:
    record = RoundRecord(
        round=1,
        client_task_similarity={"a": {"b": -0.25}},
        client_task_similarity_clients={"a": {"b": 3}},
    )
    line = record.to_json()
    assert line["client-task-similarity"] == {"a": {"b": -0.25}}
    assert line["client-task-similarity-clients"] == {"a": {"b": 3}}
    assert RoundRecord.from_json(line) == record
    assert "client-task-similarity" not in RoundRecord(round=1).to_json()
    bad = {
        "round": 1,
        "client-task-similarity": {"a": {"b": float("inf")}},
        "client-task-similarity-clients": {"a": {"b": -1, "c": 1.5, "d": "x"}},
    }
    assert RoundRecord.from_json(bad).client_task_similarity == {}
    assert RoundRecord.from_json(bad).client_task_similarity_clients == {}


def test_summary_numbers_by_hand(tmp_path: Path) -> None:
    run_dir = _write_run(tmp_path / "run")
    assert main(["report", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())

    digit, value = summary["final"]["digit"], summary["final"]["value"]
    assert digit["num-clients"] == 3 and digit["num-examples"] == 60
    assert digit["accuracy-mean"] == pytest.approx(0.7)  # (0.8 + 0.6 + 0.7) / 3
    assert digit["accuracy-worst"] == pytest.approx(0.6)  # the lowest accuracy
    assert value["num-clients"] == 3 and value["num-examples"] == 70
    assert value["mae-mean"] == pytest.approx(7 / 3)  # (2 + 1 + 4) / 3
    assert value["mae-worst"] == pytest.approx(4.0)  # the highest error
    # the 90th percentile of [1, 2, 4]: rank 1.8 -> 2 + 0.8 * (4 - 2) = 3.6
    assert value["mae-p10"] == pytest.approx(3.6)
    assert value["r2-worst"] == pytest.approx(0.6)  # R^2 is higher-is-better: 1 - 4/10
    assert summary["clients"] == 4 and summary["client-task-rows"] == 6
    # best MAE mean: round 1 (1.5) beats round 2 (7/3); best accuracy: round 2 (0.7)
    assert summary["best-round"] == {
        "digit": {"round": 2, "accuracy-mean": pytest.approx(0.7)},
        "value": {"round": 1, "mae-mean": pytest.approx(1.5)},
    }


def test_report_has_a_line_per_client_per_task_and_the_interference_table(
    tmp_path: Path,
) -> None:
    run_dir = _write_run(tmp_path / "run")
    assert main(["report", str(run_dir)]) == 0
    report = (run_dir / "report.md").read_text()

    # the per-task table: mixed kinds, MAE for the regression, worst = highest MAE
    assert "| digit | 3 | accuracy | 0.700 | " in report
    assert "| value | 3 | mae | 2.333 | 1.247 | 4.000 | 3.600 |" in report
    section = report.split("per client and task")[1]
    assert "4 clients, 6 client-task rows:" in section
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:7]
    assert lines == [
        "| 0 | digit | accuracy | 0.800 | 0.200 | 10 |",
        "| 0 | value | mae | 2.000 | 1.000 | 10 |",
        "| 1 | digit | accuracy | 0.600 | 0.400 | 20 |",
        "| 1 | value | mae | 1.000 | 0.500 | 20 |",
        "| 2 | digit | accuracy | 0.700 | 0.300 | 30 |",
        "| 3 | value | mae | 4.000 | 2.000 | 40 |",
    ]
    # client-side interference: last round 2 (0.1), mean (-0.5 + 0.1) / 2 = -0.2, 2 rounds;
    # clients 0 and 1 hold both (client 3's value rows never come with a digit row)
    assert "Task interference (client gradients)" in report
    assert "| digit | value | 2 | 2 | 0.100 | 2 | -0.200 | 2 |" in report
    assert "Task similarity (cosine of the task groups'" not in report  # no server pairs
    heatmap = run_dir / "plots" / "client-task-similarity.png"
    assert heatmap.read_bytes()[:8] == PNG
    assert not (run_dir / "plots" / "task-similarity.png").exists()
    assert (run_dir / "plots" / "mae.png").exists()

    heatmap.unlink()  # the rebuild draws it again from metrics.jsonl alone
    (run_dir / "report.md").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert heatmap.read_bytes()[:8] == PNG
    assert (run_dir / "report.md").read_text() == report


def test_clients_holding_both_count_distinct_clients_over_phases_and_rounds() -> None:
    records = [
        RoundRecord(round=1, train=PhaseRecord.of([_digit(5, 0.5), _value(5, 1.0)])),
        RoundRecord(round=2, evaluate=PhaseRecord.of([_digit(5, 0.5), _value(5, 1.0)])),
        RoundRecord(round=2, train=PhaseRecord.of([_digit(6, 0.5), _value(7, 1.0)])),
    ]
    assert clients_holding_both(records) == {("digit", "value"): 1}
    assert client_similarity_table(records) == []  # no cosine reported


def test_a_single_task_run_has_no_client_sections(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run = RunDirectory(run_dir)
    for number in range(2):
        run.append_metrics(
            RoundRecord(round=number, evaluate=PhaseRecord.of([_digit(0, 0.5), _digit(1, 0.7)]))
        )
    assert main(["report", str(run_dir)]) == 0
    report = (run_dir / "report.md").read_text()
    assert "per client and task" not in report and "client gradients" not in report
    assert "clients" not in json.loads((run_dir / "summary.json").read_text())
    assert not (run_dir / "plots" / "client-task-similarity.png").exists()
    assert "clients" not in run_entry(run_dir)


def _csv(path: Path) -> list[dict[str, Any]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_compare_matches_client_rows_by_client_and_task(tmp_path: Path) -> None:
    # Prepare: fedavg's final MAEs are half local-only's; local-only lacks client 3's value row
    fedavg = _write_run(tmp_path / "fedavg", _final_rows(scale=0.5))
    local_rows = [r for r in _final_rows() if r.key != (3, "value")][::-1]  # any order
    local = _write_run(tmp_path / "local", local_rows)
    folder = tmp_path / "compare"
    folder.mkdir()
    results = {
        "seeds": [0],
        "strategies": ["fedavg", LOCAL_ONLY],
        "runs": {"fedavg": {"0": run_entry(fedavg)}, LOCAL_ONLY: {"0": run_entry(local)}},
    }
    write_comparison_results(folder, results)

    # Execute
    rows = client_comparison_rows(results)
    written = write_comparison_report(folder)

    # Assert
    fed = {(r["client-id"], r["task"]): r for r in rows if r["strategy"] == "fedavg"}
    assert sorted(fed) == [
        (0, "digit"),
        (0, "value"),
        (1, "digit"),
        (1, "value"),
        (2, "digit"),
        (3, "value"),
    ]
    assert fed[(0, "value")]["metric"] == "mae"
    assert fed[(0, "value")]["value"] == pytest.approx(1.0)
    assert fed[(0, "value")]["gain"] == pytest.approx(-1.0)  # 1.0 - 2.0: a lower error
    assert fed[(0, "value")]["better"] is True
    assert fed[(1, "digit")]["gain"] == pytest.approx(0.0) and fed[(1, "digit")]["better"] is False
    table = folder / "compare-clients.csv"
    assert table in written
    by_key = {(r["strategy"], r["client-id"], r["task"]): r for r in _csv(table)}
    assert by_key[("fedavg", "3", "value")]["gain"] == ""  # no local-only row to match
    assert float(by_key[("fedavg", "3", "value")]["value"]) == pytest.approx(2.0)
    assert float(by_key[("fedavg", "1", "value")]["gain"]) == pytest.approx(-0.5)
    assert len(by_key) == 6 + 5  # fedavg's six rows, local-only's five
