"""Tests for :func:`fedmtl.metrics.summarize_by_task` and :func:`fedmtl.results.summarize_run`."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fedmtl.metrics import summarize_by_task
from fedmtl.results import RoundRecord, summarize_run, to_toml


def test_summarize_by_task_by_hand() -> None:
    # Prepare
    rows = [
        {"client-id": 0, "task": "digit", "num-examples": 10, "accuracy": 0.9, "loss": 0.2},
        {"client-id": 3, "task": "digit", "num-examples": 30, "accuracy": 0.5, "loss": 1.0},
        {"client-id": 6, "task": "digit", "num-examples": 20, "accuracy": 0.7, "loss": 0.6},
        {"client-id": 1, "task": "parity", "num-examples": 40, "accuracy": 0.8, "loss": 0.4},
    ]

    # Execute
    out = summarize_by_task(rows)

    # Assert
    assert list(out) == ["digit", "parity"]
    digit = out["digit"]
    assert digit["num-clients"] == 3
    assert digit["num-examples"] == 60
    assert digit["accuracy-mean"] == pytest.approx(0.7)  # unweighted: (0.9 + 0.5 + 0.7) / 3
    assert digit["accuracy-std"] == pytest.approx(math.sqrt((0.04 + 0.04 + 0.0) / 3))
    assert digit["accuracy-worst"] == pytest.approx(0.5)  # min: higher is better
    assert digit["loss-mean"] == pytest.approx(0.6)
    assert digit["loss-std"] == pytest.approx(math.sqrt((0.16 + 0.16 + 0.0) / 3))
    assert digit["loss-worst"] == pytest.approx(1.0)  # max: lower is better
    # 10th percentile of [0.5, 0.7, 0.9]: rank 0.1 * 2 = 0.2 -> 0.5 + 0.2 * (0.7 - 0.5) = 0.54
    assert digit["accuracy-p10"] == pytest.approx(0.54)
    # losses: the 90th percentile of [0.2, 0.6, 1.0]: rank 1.8 -> 0.6 + 0.8 * 0.4 = 0.92
    assert digit["loss-p10"] == pytest.approx(0.92)
    assert "client-id-mean" not in digit and "num-examples-mean" not in digit
    parity = out["parity"]
    assert parity["accuracy-mean"] == parity["accuracy-worst"] == pytest.approx(0.8)
    assert parity["accuracy-std"] == 0.0
    assert parity["num-examples"] == 40


def test_summarize_by_task_train_loss_is_lower_is_better_and_skips_non_numbers() -> None:
    rows: list[dict[str, Any]] = [
        {"task": "a", "train-loss": 1.0, "f1": 0.2, "note": "x"},
        {"task": "a", "train-loss": 3.0, "f1": 0.6},
    ]
    out = summarize_by_task(rows)["a"]
    assert out["train-loss-worst"] == 3.0
    assert out["f1-worst"] == 0.2
    assert out["f1-mean"] == pytest.approx(0.4)
    assert out["num-examples"] == 0
    assert not any(k.startswith("note") for k in out)


def test_summarize_by_task_metric_missing_for_some_clients() -> None:
    rows = [{"task": "a", "accuracy": 0.4}, {"task": "a"}]
    out = summarize_by_task(rows)["a"]
    assert out["num-clients"] == 2
    assert out["accuracy-mean"] == pytest.approx(0.4)  # over the clients that report it


def test_summarize_by_task_empty() -> None:
    assert summarize_by_task([]) == {}


def _tasks(acc: float, loss: float) -> dict[str, dict[str, float]]:
    return {"digit": {"accuracy-mean": acc, "loss-mean": loss}}


def _round(rnd: int, acc: float | None, **extra: Any) -> RoundRecord:
    record: dict[str, Any] = {
        "round": rnd,
        "evaluate": {"tasks": _tasks(acc, 1.0 - acc) if acc is not None else {}},
        "comm": {"bytes-up": 100 * rnd, "bytes-down": 10 * rnd},
        "time": {"elapsed-s": 1.5 * rnd},
        "rejected": [],
        "failures": [],
    }
    record.update(extra)
    return RoundRecord.from_json(record)


def test_summarize_run_keeps_final_and_best_rounds_apart() -> None:
    # Prepare: best accuracy in round 2, final round 3 is worse
    records = [
        _round(0, 0.3),
        _round(1, 0.6, rejected=[{"node-id": 1}]),
        _round(2, 0.8),
        _round(3, 0.7, failures=[{"node-id": 2}, {"node-id": 3}]),
    ]

    # Execute
    summary = summarize_run(records)

    # Assert
    assert summary["rounds"] == 3
    assert summary["initial"] == _tasks(0.3, 0.7)
    assert summary["final"]["digit"]["accuracy-mean"] == 0.7
    assert summary["best-round"] == {"digit": {"round": 2, "accuracy-mean": 0.8}}
    assert summary["bytes-up"] == 100 * (0 + 1 + 2 + 3)
    assert summary["bytes-down"] == 10 * 6
    assert summary["wall-time-s"] == pytest.approx(4.5)
    assert summary["rejected-replies"] == 1
    assert summary["failed-replies"] == 2


def test_summarize_run_first_best_round_wins_ties() -> None:
    summary = summarize_run([_round(0, 0.5), _round(1, 0.9), _round(2, 0.9)])
    assert summary["best-round"]["digit"]["round"] == 1
    assert summary["final"]["digit"]["accuracy-mean"] == 0.9


def test_summarize_run_ignores_rounds_without_evaluation_for_final() -> None:
    records = [_round(0, 0.4), _round(1, 0.6), _round(2, None)]
    summary = summarize_run(records)
    assert summary["rounds"] == 1
    assert summary["final"]["digit"]["accuracy-mean"] == 0.6
    assert summary["bytes-up"] == 100 * 3  # traffic still counted for every round


def test_summarize_run_without_evaluation() -> None:
    assert summarize_run([]) == {"rounds": 0}
    assert summarize_run([_round(1, None)]) == {"rounds": 0}


def test_to_toml_writes_flat_values() -> None:
    text = to_toml({"a": 1, "b": [1.5, "x"], "c": True, "d": {"eta": 0.1}})
    assert text == 'a = 1\nb = [1.5, "x"]\nc = true\nd = {"eta" = 0.1}\n'
