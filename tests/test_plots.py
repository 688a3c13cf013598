"""Reading a run's records, the series and tables drawn from them, and the plots.

Covers :mod:`fedmtl.results.reading`, ``series``, ``tables`` and ``plots``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedmtl.results import RoundRecord, format_task_table, read_metrics, rounds_from_json
from fedmtl.results.plots import plot_bytes, plot_task_metric, write_run_plots
from fedmtl.results.series import bytes_series, discover_metrics, metric_series

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _task_stats(acc: float, loss: float, clients: int, f1: float | None = None) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "accuracy-mean": acc,
        "accuracy-std": 0.05,
        "accuracy-worst": acc - 0.1,
        "loss-mean": loss,
        "loss-std": 0.1,
        "loss-worst": loss + 0.3,
        "num-clients": clients,
        "num-examples": 30 * clients,
    }
    if f1 is not None:
        stats["f1-mean"] = f1
        stats["f1-std"] = 0.02
        stats["f1-worst"] = f1 - 0.05
    return stats


def _record(rnd: int) -> dict[str, Any]:
    """Synthetic record: 2 tasks, parity listed first to check sorting."""
    evaluate = {
        "tasks": {
            "parity": _task_stats(0.5 + 0.1 * rnd, 0.7 - 0.1 * rnd, 2),
            "digit": _task_stats(0.6 + 0.1 * rnd, 1.2 - 0.2 * rnd, 4, f1=0.55 + 0.1 * rnd),
        },
        "clients": [
            {"client-id": 0, "task": "digit", "num-examples": 30, "loss": 0.5, "accuracy": 0.8},
            {"client-id": 4, "task": "parity", "num-examples": 30, "loss": 0.4, "accuracy": 0.7},
        ],
    }
    train: dict[str, Any] = {"tasks": {}, "clients": []}
    if rnd > 0:
        train = {
            "tasks": {
                "digit": _task_stats(0.65 + 0.1 * rnd, 1.0 - 0.2 * rnd, 4),
                "parity": _task_stats(0.55 + 0.1 * rnd, 0.6 - 0.1 * rnd, 2),
            },
            "clients": [],
        }
    return {
        "round": rnd,
        "time": {"round-s": 1.5, "elapsed-s": 1.5 * rnd},
        "comm": {"bytes-up": 2_000_000 * rnd, "bytes-down": 3_000_000 * rnd},
        "evaluate": evaluate,
        "train": train,
        "rejected": [],
    }


@pytest.fixture
def records() -> list[RoundRecord]:
    return [RoundRecord.from_json(_record(r)) for r in range(3)]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    (path / "metrics.jsonl").write_text(
        "".join(json.dumps(_record(r)) + "\n" for r in range(3)), encoding="utf-8"
    )
    return path


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert len(data) > len(PNG_SIGNATURE)
    assert data.startswith(PNG_SIGNATURE), path


# --------------------------------------------------------------------------- #
# read_metrics
# --------------------------------------------------------------------------- #


def test_read_metrics_roundtrip_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('\n{"round": 0}\n   \n{"round": 1}\n\n', encoding="utf-8")
    assert read_metrics(path) == [{"round": 0}, {"round": 1}]


def test_read_metrics_skips_truncated_last_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "metrics.jsonl"
    full = json.dumps(_record(2))
    path.write_text(
        json.dumps(_record(0)) + "\n" + json.dumps(_record(1)) + "\n" + full[: len(full) // 2],
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, logger="fedmtl.results.reading"):
        out = read_metrics(path)
    assert [r["round"] for r in out] == [0, 1]
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "line 3" in warnings[0].getMessage()


def test_read_metrics_truncated_last_line_followed_by_blank(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"round": 0}\n{"round": 1, "ti\n\n', encoding="utf-8")
    assert read_metrics(path) == [{"round": 0}]


def test_read_metrics_malformed_middle_line_raises(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"round": 0}\n{"round": 1,, }\n{"round": 2}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2\b"):
        read_metrics(path)


def test_read_metrics_line_number_counts_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"round": 0}\n\nnot json\n{"round": 2}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 3\b"):
        read_metrics(path)


def test_read_metrics_non_object_raises(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"round": 0}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2\b"):
        read_metrics(path)


# --------------------------------------------------------------------------- #
# Series extraction
# --------------------------------------------------------------------------- #


def test_discover_metrics(records: list[RoundRecord]) -> None:
    assert discover_metrics(records) == ["accuracy", "loss", "f1"]
    assert discover_metrics(records, phase="train") == ["accuracy", "loss"]
    assert discover_metrics([RoundRecord(round=0)]) == []


def test_metric_series_values(records: list[RoundRecord]) -> None:
    series = metric_series(list(reversed(records)), "accuracy")
    assert list(series) == ["digit", "parity"]
    digit = series["digit"]
    np.testing.assert_allclose(digit.rounds, [0, 1, 2])
    np.testing.assert_allclose(digit.mean, [0.6, 0.7, 0.8])
    np.testing.assert_allclose(digit.worst, [0.5, 0.6, 0.7])
    # f1 only exists for digit; train phase starts at round 1.
    assert list(metric_series(records, "f1")) == ["digit"]
    np.testing.assert_allclose(metric_series(records, "loss", "train")["parity"].rounds, [1, 2])


def test_metric_series_tolerates_missing_keys() -> None:
    recs: list[dict[str, Any]] = [
        {"round": 0},
        {"round": 1, "evaluate": {"tasks": {"digit": {"accuracy-mean": 0.5}}}},
        {"round": 2, "evaluate": {"tasks": {"digit": {"loss-mean": 0.5}}}},
        {"evaluate": {"tasks": {"digit": {"accuracy-mean": 0.9}}}},  # no round: skipped
        {"round": 3, "evaluate": None},
    ]
    digit = metric_series(rounds_from_json(recs), "accuracy")["digit"]
    np.testing.assert_allclose(digit.rounds, [1, 2])
    assert digit.mean[0] == 0.5 and math.isnan(digit.mean[1])
    assert np.isnan(digit.worst).all()


def test_bytes_series_in_mb(records: list[RoundRecord]) -> None:
    rounds, up, down = bytes_series([*records, RoundRecord(round=3)])
    np.testing.assert_allclose(rounds, [0, 1, 2, 3])
    np.testing.assert_allclose(up[:3], [0.0, 2.0, 4.0])
    np.testing.assert_allclose(down[:3], [0.0, 3.0, 6.0])
    assert math.isnan(up[3]) and math.isnan(down[3])


# --------------------------------------------------------------------------- #
# Plots
# --------------------------------------------------------------------------- #


def test_write_run_plots_writes_pngs(run_dir: Path) -> None:
    paths = write_run_plots(run_dir)
    plots = run_dir / "plots"
    assert paths == [
        plots / "accuracy.png",
        plots / "loss.png",
        plots / "f1.png",
        plots / "bytes.png",
    ]
    for path in paths:
        _assert_png(path)
    assert sorted(p.name for p in plots.iterdir()) == sorted(p.name for p in paths)


def test_write_run_plots_skips_truncated_tail(run_dir: Path) -> None:
    with (run_dir / "metrics.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"round": 3, "comm": {"bytes-up": 12')
    paths = write_run_plots(run_dir)
    assert len(paths) == 4
    for path in paths:
        _assert_png(path)


def test_write_run_plots_no_records_raises(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no metrics records"):
        write_run_plots(tmp_path)
    assert not (tmp_path / "plots").exists()


def test_write_run_plots_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_run_plots(tmp_path)


def test_plot_task_metric_train_phase_and_nested_out(
    tmp_path: Path, records: list[RoundRecord]
) -> None:
    out = tmp_path / "a" / "b" / "train-loss.png"
    assert plot_task_metric(records, "loss", out, phase="train") == out
    _assert_png(out)


def test_plot_task_metric_without_data_still_writes(tmp_path: Path) -> None:
    out = plot_task_metric([RoundRecord(round=0)], "accuracy", tmp_path / "acc.png")
    _assert_png(out)


def test_plot_bytes(tmp_path: Path, records: list[RoundRecord]) -> None:
    out = plot_bytes(records, tmp_path / "bytes.png")
    _assert_png(out)


# --------------------------------------------------------------------------- #
# format_task_table
# --------------------------------------------------------------------------- #


def test_format_task_table(records: list[RoundRecord]) -> None:
    table = format_task_table(records[1].evaluate.tasks)
    lines = table.splitlines()
    assert lines[0] == (
        "| task | clients | accuracy mean | accuracy std | worst client | 10th percentile "
        "| loss mean | f1 mean |"
    )
    assert set(lines[1].replace("|", "")) <= set(":- ")
    assert lines[1].count("|") == lines[0].count("|")
    # Rows sorted by task name although "parity" comes first in the record.
    assert lines[2] == "| digit | 4 | 0.700 | 0.050 | 0.600 | - | 1.000 | 0.650 |"
    assert lines[3] == "| parity | 2 | 0.600 | 0.050 | 0.500 | - | 0.600 | - |"
    assert len(lines) == 4


def test_format_task_table_train_phase_and_empty(records: list[RoundRecord]) -> None:
    table = format_task_table(records[2].train.tasks)
    lines = table.splitlines()
    assert "f1 mean" not in lines[0]
    assert lines[2] == "| digit | 4 | 0.850 | 0.050 | 0.750 | - | 0.600 |"
    empty = format_task_table(records[0].train.tasks).splitlines()
    assert len(empty) == 2
    assert empty[0].startswith("| task | clients |")


def test_format_task_table_missing_values() -> None:
    tasks: dict[str, dict[str, Any]] = {"b": {"accuracy-mean": 0.12345}, "a": {}}
    lines = format_task_table(tasks).splitlines()
    assert lines[2] == "| a | - | - | - | - | - | - |"
    assert lines[3] == "| b | - | 0.123 | - | - | - | - |"
