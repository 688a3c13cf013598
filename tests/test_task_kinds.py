"""Task kinds: hand-computed metrics, standardization, regression training, reports, a run."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmtl.data import get_dataset_spec
from fedmtl.data.checks import DatasetContractError, check_examples
from fedmtl.data.digits import DIGITS, load_digits_data
from fedmtl.data.federation import PartitionSpec, client_data
from fedmtl.data.registry import TaskSpec, identity_labels
from fedmtl.metrics import (
    LOWER_IS_BETTER,
    PRIMARY_METRICS,
    ClientRow,
    lower_is_better,
    summarize_by_task,
)
from fedmtl.models import build_model
from fedmtl.registry import RegistryError
from fedmtl.results import PhaseRecord, RoundRecord, RunDirectory
from fedmtl.results.compare import LOCAL_ONLY, comparison_rows, format_csv, format_markdown
from fedmtl.results.report import best_round_table
from fedmtl.results.summary import summarize_run
from fedmtl.results.tables import format_task_table
from fedmtl.run_model import initial_model
from fedmtl.server_app import run_server
from fedmtl.task_kinds import (
    CLASSIFICATION,
    TASK_KINDS,
    TargetError,
    TargetScale,
    TaskObjective,
    macro_f1,
    regression_scores,
)
from fedmtl.training import TrainSettings, evaluate, train_local
from tests.e2e_helpers import small
from tests.inprocess_grid import InProcessGrid, device_context

REGRESSION = TaskObjective.named("regression", TargetScale(mean=10.0, std=2.0))


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)


# --------------------------------------------------------------------------- #
# Metrics by hand
# --------------------------------------------------------------------------- #


def test_macro_f1_by_hand() -> None:
    # truth 0 0 1 1 2, predicted 0 1 1 1 0:
    # class 0: TP 1, FP 1, FN 1 -> 2/4; class 1: TP 2, FP 1, FN 0 -> 4/5; class 2: TP 0, FN 1 -> 0
    truth = np.array([0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 0])
    assert macro_f1(predicted, truth) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert macro_f1(truth, truth) == 1.0
    assert macro_f1(np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == 0.0


def test_regression_scores_by_hand() -> None:
    # errors 1, -1, 2, 0: MAE 4/4 = 1; RMSE sqrt(6/4); truth mean 2.5, SS_tot 5, SS_res 6
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    predicted = np.array([2.0, 1.0, 5.0, 4.0])
    scores = regression_scores(predicted, truth)
    assert scores["mae"] == pytest.approx(1.0)
    assert scores["rmse"] == pytest.approx(math.sqrt(1.5))
    assert scores["r2"] == pytest.approx(1 - 6 / 5)


def test_r2_of_constant_targets_is_finite() -> None:
    same = np.array([3.0, 3.0])
    assert regression_scores(same, same)["r2"] == 1.0
    assert regression_scores(same + 1, same)["r2"] == 0.0
    assert regression_scores(np.array([]), np.array([])) == {"mae": 0.0, "rmse": 0.0, "r2": 0.0}


def test_standardization_and_scores_in_original_units() -> None:
    # Prepare: targets 8, 10, 14 with mean 10, std 2 -> z = -1, 0, 2
    y = np.array([8.0, 10.0, 14.0])

    # Execute
    z = REGRESSION.targets(y)
    outputs = torch.tensor([[-1.5], [0.0], [2.0]])  # predictions 7, 10, 14
    scores = REGRESSION.scores(outputs, z)

    # Assert
    assert z.dtype == torch.float32 and z.tolist() == [-1.0, 0.0, 2.0]
    assert scores["mae"] == pytest.approx(1 / 3)  # |7 - 8| / 3, in the targets' units
    assert scores["rmse"] == pytest.approx(math.sqrt(1 / 3))
    # Huber (delta 1) on the standardized errors -0.5, 0, 0: 0.5 * 0.25 / 3
    assert REGRESSION.kind.loss(outputs, z, "mean") == pytest.approx(0.125 / 3)
    # beyond one standard deviation it is linear: |e| - 0.5
    assert REGRESSION.kind.loss(torch.tensor([[3.0]]), torch.tensor([0.0]), "sum") == 2.5


def test_target_scale_of_values_and_its_checks() -> None:
    scale = TargetScale.of(np.array([1.0, 2.0, 3.0, 4.0]))
    assert (scale.mean, scale.std) == pytest.approx((2.5, math.sqrt(1.25)))
    assert TargetScale.of(np.array([5.0, 5.0])).std == 1.0  # constant: no division by zero
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(TargetError, match="std"):
            TargetScale(std=bad)
    with pytest.raises(TargetError, match="mean"):
        TargetScale(mean=math.nan)
    with pytest.raises(TargetError, match="finite"):
        TargetScale.of(np.array([1.0, math.nan]))


# --------------------------------------------------------------------------- #
# The kinds agree with the metrics layer; task specs are checked
# --------------------------------------------------------------------------- #


def test_metrics_layer_directions_come_from_the_kinds() -> None:
    assert len(TASK_KINDS) >= 2
    for name in TASK_KINDS:
        kind = TASK_KINDS.get(name)
        assert PRIMARY_METRICS[name] == kind.primary
        assert kind.lower_is_better <= set(kind.metrics)
        for metric in kind.metrics:
            assert lower_is_better(metric) == (metric in kind.lower_is_better), (name, metric)
    declared = {m for n in TASK_KINDS for m in TASK_KINDS.get(n).lower_is_better}
    assert LOWER_IS_BETTER - declared == {"loss", "train-loss"}


def test_worst_client_is_the_highest_error_and_the_lowest_r2() -> None:
    rows = [
        {"task": "t", "num-examples": 4, "mae": 1.0, "rmse": 2.0, "r2": 0.9},
        {"task": "t", "num-examples": 4, "mae": 3.0, "rmse": 4.0, "r2": 0.1},
    ]
    stats = summarize_by_task(rows)["t"]
    assert (stats["mae-worst"], stats["rmse-worst"], stats["r2-worst"]) == (3.0, 4.0, 0.1)
    assert stats["mae-p10"] == pytest.approx(2.8)  # the 90th percentile of errors
    assert stats["r2-p10"] == pytest.approx(0.18)


def test_task_spec_checks_its_kind_outputs_and_scale() -> None:
    with pytest.raises(TargetError, match=r"task 'v'.*num_outputs = 1"):
        TaskSpec("v", 2, identity_labels, kind="regression")
    with pytest.raises(RegistryError, match="did you mean 'regression'"):
        TaskSpec("v", 1, identity_labels, kind="regresion")
    with pytest.raises(TargetError, match=r"task 'v'.*std"):
        TaskSpec("v", 1, identity_labels, kind="regression", target_std=0.0)
    assert TaskSpec("c", 3, identity_labels).objective.kind is CLASSIFICATION.kind


def test_targets_are_checked_by_kind() -> None:
    x = np.zeros((2, 3), dtype=np.float32)
    check_examples("w", x, np.array([0.5, 2.0]), 1, "regression")
    with pytest.raises(DatasetContractError, match="w: regression targets hold NaN"):
        check_examples("w", x, np.array([0.5, math.nan]), 1, "regression")
    with pytest.raises(DatasetContractError, match="w: labels must be integers"):
        check_examples("w", x, np.array([0.5, 2.0]), 3, "classification")


def test_digit_value_scale_is_the_client_pools_mean_and_std() -> None:
    spec = get_dataset_spec("digits").tasks["digit-value"]
    base = load_digits_data()
    _, pool = DIGITS.source_split(len(base.y))
    values = spec.label_fn(base.y[pool])
    assert spec.kind == "regression" and spec.num_outputs == 1 and values.dtype == np.float64
    assert spec.target_mean == pytest.approx(values.mean(), abs=1e-12)
    assert spec.target_std == pytest.approx(values.std(), abs=1e-12)


# --------------------------------------------------------------------------- #
# Training and evaluation through the kind
# --------------------------------------------------------------------------- #


def test_regression_training_reduces_the_error() -> None:
    # Prepare: one digit-value client and a fresh model with a 1-output head
    spec = PartitionSpec(dataset="digits", tasks=("digit-value",), num_clients=2, partitioner="iid")
    data = client_data(spec, 0)
    objective = get_dataset_spec("digits").tasks["digit-value"].objective
    model = build_model("digits-cnn", {"digit-value": 1}, pretrained="none", seed=0)
    trainable = {k for k, _ in model.named_parameters()}
    before = evaluate(model, "digit-value", data.x_train, data.y_train, objective=objective)

    # Execute
    settings = TrainSettings(epochs=5, batch_size=16, learning_rate=0.02, seed=1)
    trained = train_local(
        model, "digit-value", data.x_train, data.y_train, settings, trainable, objective=objective
    )
    after = evaluate(model, "digit-value", data.x_train, data.y_train, objective=objective)

    # Assert: the loss, the MAE and the RMSE (squared: the MSE, in digits) fall, R² rises
    assert trained["num-examples"] == len(data.y_train)
    assert after["loss"] < 0.5 * before["loss"]
    assert after["rmse"] < 0.7 * before["rmse"]
    assert after["mae"] < before["mae"] and after["r2"] > before["r2"]
    assert list(after) == ["loss", "mae", "rmse", "r2", "num-examples"]


def test_regression_evaluate_matches_a_hand_computation() -> None:
    # Prepare
    model = build_model("digits-cnn", {"v": 1}, pretrained="none", seed=3)
    model.eval()
    x = load_digits_data().x[:20]
    y = np.arange(20, dtype=np.float64)
    with torch.no_grad():
        predicted = model(torch.from_numpy(x), "v").squeeze(-1).double().numpy() * 2.0 + 10.0

    # Execute
    result = evaluate(model, "v", x, y, batch_size=7, objective=REGRESSION)

    # Assert
    assert result["mae"] == pytest.approx(np.abs(predicted - y).mean(), rel=1e-5)
    assert result["rmse"] == pytest.approx(np.sqrt(((predicted - y) ** 2).mean()), rel=1e-5)
    error = np.abs((predicted - y) / 2.0)
    huber = np.where(error < 1, 0.5 * error**2, error - 0.5)
    assert result["loss"] == pytest.approx(huber.mean(), rel=1e-4)


def test_classification_evaluate_adds_macro_f1_by_hand() -> None:
    model = build_model("digits-cnn", {"digit": 10}, pretrained="none", seed=0)
    model.eval()
    base = load_digits_data()
    x, y = base.x[:50], base.y[:50]
    with torch.no_grad():
        predicted = model(torch.from_numpy(x), "digit").argmax(1).numpy()
    result = evaluate(model, "digit", x, y, batch_size=16)
    assert list(result) == ["loss", "accuracy", "macro-f1", "num-examples"]
    assert result["macro-f1"] == pytest.approx(macro_f1(predicted, y))


# --------------------------------------------------------------------------- #
# Tables, best round, report
# --------------------------------------------------------------------------- #


def _stats(**values: float) -> dict[str, float]:
    return {"num-clients": 2, **{f"{k.replace('_', '-')}-mean": v for k, v in values.items()}}


def test_regression_table_shows_its_primary_metric() -> None:
    table = format_task_table(
        {"v": {**_stats(mae=1.5, loss=0.3, rmse=2.0, r2=0.5), "mae-worst": 2}}
    )
    header, _, row = table.splitlines()
    assert header == (
        "| task | clients | mae mean | mae std | worst client | 10th percentile | loss mean "
        "| r2 mean | rmse mean |"
    )
    assert row == "| v | 2 | 1.500 | - | 2.000 | - | 0.300 | 0.500 | 2.000 |"


def test_mixed_kinds_table_names_each_rows_metric() -> None:
    table = format_task_table({"d": _stats(accuracy=0.9, macro_f1=0.8), "v": _stats(mae=1.5)})
    header, _, digit, value = table.splitlines()
    assert header.startswith("| task | clients | metric | mean | std | worst client |")
    assert header.endswith("| loss mean | macro-f1 mean |")
    assert digit.startswith("| d | 2 | accuracy | 0.900 |")
    assert value.startswith("| v | 2 | mae | 1.500 |")


def _round(number: int, mae: float, accuracy: float) -> RoundRecord:
    rows = [
        ClientRow(0, "v", {"num-examples": 4, "mae": mae}),
        ClientRow(1, "d", {"num-examples": 4, "accuracy": accuracy}),
    ]
    return RoundRecord(round=number, evaluate=PhaseRecord.of(rows))


def test_best_round_is_the_lowest_error_and_the_highest_accuracy() -> None:
    records = [_round(0, 3.0, 0.1), _round(1, 1.0, 0.5), _round(2, 2.0, 0.7)]
    best = summarize_run(records)["best-round"]
    assert best == {"v": {"round": 1, "mae-mean": 1.0}, "d": {"round": 2, "accuracy-mean": 0.7}}
    assert best_round_table(best)[2:] == [
        "| task | best round | metric | mean |",
        "|:---|---:|:---|---:|",
        "| d | 2 | accuracy | 0.700 |",
        "| v | 1 | mae | 1.000 |",
    ]


# --------------------------------------------------------------------------- #
# A federation with a classification and a regression task, in process
# --------------------------------------------------------------------------- #


def test_a_federation_reports_the_regression_tasks_metrics(
    tmp_path: Path, server_identity: None
) -> None:
    # Prepare
    cfg = small(tmp_path, tasks=["digit", "digit-value"], **{"num-clients": 4})
    contexts = {100 + c: device_context(100 + c, {"partition-id": c}) for c in range(4)}
    run = RunDirectory.create(cfg)

    # Execute
    run_server(InProcessGrid(contexts, cfg), cfg, run)  # type: ignore[arg-type]

    # Assert: every evaluated round has each task's own metrics, per client
    lines = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    evaluated = [line for line in lines if line.get("evaluate", {}).get("clients")]
    assert [line["round"] for line in evaluated] == [0, 1, 2]
    for line in evaluated:
        rows = line["evaluate"]["clients"]
        regression = [r for r in rows if r["task"] == "digit-value"]
        digit = [r for r in rows if r["task"] == "digit"]
        assert len(regression) == 2 and len(digit) == 2
        for row in regression:
            assert {"mae", "rmse", "r2", "loss"} <= set(row) and "accuracy" not in row
            assert 0 <= row["mae"] <= row["rmse"]
        assert all({"accuracy", "macro-f1"} <= set(row) for row in digit)
        assert line["evaluate"]["tasks"]["digit-value"]["mae-worst"] == max(
            r["mae"] for r in regression
        )
    report = (run.path / "report.md").read_text()
    assert "| digit-value | 2 | mae |" in report
    assert "| digit | 2 | accuracy |" in report
    assert (run.path / "plots" / "mae.png").is_file()


def test_a_comparison_reports_a_regression_tasks_mae() -> None:
    # Prepare: one seed; fedavg's digit-value clients err 1 and 3, local-only's 2 and 4
    def final(errors: list[float], accuracy: float) -> dict[str, dict[str, float]]:
        rows = [{"task": "v", "num-examples": 5, "mae": e} for e in errors]
        rows += [{"task": "d", "num-examples": 5, "accuracy": accuracy}]
        return summarize_by_task(rows)

    results = {
        "seeds": [0],
        "strategies": ["fedavg", LOCAL_ONLY],
        "runs": {
            "fedavg": {"0": {"final": final([1.0, 3.0], 0.9)}},
            LOCAL_ONLY: {"0": {"final": final([2.0, 4.0], 0.8)}},
        },
    }

    # Execute
    rows = {(r["strategy"], r["task"]): r for r in comparison_rows(results)}
    markdown = format_markdown(list(rows.values()), 1)
    parsed = list(csv.DictReader(io.StringIO(format_csv(list(rows.values())))))

    # Assert: the regression row is in MAE, its worst client the highest error
    value = rows[("fedavg", "v")]
    assert value["metric"] == "mae" and value["mae-mean"] == 2.0 and value["mae-worst"] == 3.0
    assert value["gain"] == pytest.approx(-1.0)  # lower error than local-only
    assert rows[("fedavg", "d")]["accuracy-mean"] == 0.9
    assert "v: mae mean ± sd / worst / p10 / gain" in markdown
    assert "| fedavg | 0.900 ± 0.000 / 0.900 / 0.900 / +0.100 | 2.000 ± 0.000 / 3.000" in markdown
    assert list(parsed[0])[3:5] == ["accuracy-mean", "accuracy-mean-sd"]
    assert "mae-mean" in parsed[0]


def test_a_regression_head_starts_at_the_target_mean(tmp_path: Path) -> None:
    # Prepare / Execute
    model = initial_model(small(tmp_path, tasks=["digit", "digit-value"]))
    seeded = build_model("digits-cnn", {"digit": 10}, pretrained="builtin", seed=0)

    # Assert: the regression head is zero (predicts z = 0: the mean), the classifier untouched
    assert all(not p.any() for p in model.heads["digit-value"].parameters())
    for name, value in seeded.heads["digit"].state_dict().items():
        assert torch.equal(model.heads["digit"].state_dict()[name], value)
    x = torch.from_numpy(load_digits_data().x[:3])
    assert model(x, "digit-value").abs().sum() == 0
