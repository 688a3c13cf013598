"""A ``files`` task of kind ``regression``: numeric label columns, their scale, a federation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedmtl.config import ConfigError, build_config, load_experiment, partition_spec
from fedmtl.data import get_dataset_spec
from fedmtl.data.device import DeviceDataError, device_data
from fedmtl.data.digits import DIGITS, load_digits_data
from fedmtl.data.registry import DatasetOptionError, DatasetSpec, regression_task
from fedmtl.results import RunDirectory
from fedmtl.run_model import check_run_inputs
from fedmtl.server_app import run_server
from tests.inprocess_grid import InProcessGrid, device_context

# Hand computation: targets 1, 2, 4, 9 -> mean 4, population std sqrt((9+4+0+25)/4).
TARGETS = (1.0, 2.0, 4.0, 9.0)
MEAN, STD = 4.0, math.sqrt(38 / 4)


def _csv(path: Path, values: list[str], column: str = "score") -> Path:
    path.write_text(f"text,{column}\n" + "".join(f"row {i},{v}\n" for i, v in enumerate(values)))
    return path


def _jsonl(path: Path, values: list[Any], key: str = "label") -> Path:
    path.write_text(
        "".join(json.dumps({"text": f"row {i}", key: v}) + "\n" for i, v in enumerate(values))
    )
    return path


def _spec(tasks: dict[str, dict[str, Any]]) -> DatasetSpec:
    return get_dataset_spec("files", {"tasks": tasks})


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_numeric_label_column_builds_a_regression_task(tmp_path: Path, fmt: str) -> None:
    # Prepare: the same targets as csv text and as jsonl numbers (one given as a string)
    if fmt == "csv":
        path = _csv(tmp_path / "scores.csv", ["1", "2.0", "4", "9e0"])
        table: dict[str, Any] = {"path": str(path), "kind": "regression", "label-column": "score"}
    else:
        path = _jsonl(tmp_path / "scores.jsonl", [1, 2.0, "4", 9])
        table = {"path": str(path), "kind": "regression"}

    # Execute
    spec = _spec({"price": table})

    # Assert: kind, one output, the pool's mean and population std, float targets
    task = spec.tasks["price"]
    assert (task.kind, task.num_outputs, task.labels) == ("regression", 1, ())
    assert task.target_mean == pytest.approx(MEAN, abs=1e-12)
    assert task.target_std == pytest.approx(STD, abs=1e-12)
    assert spec.task_data is not None
    y = spec.task_data("price").y
    assert y.dtype == np.float64 and y.tolist() == list(TARGETS)
    assert spec.input_kind == "text"


def test_an_npz_regression_reads_its_float_array(tmp_path: Path) -> None:
    path = tmp_path / "v.npz"
    np.savez(path, x=np.zeros((4, 3), np.float32), y=np.array([0.5, 1.5, 2.5, 3.5]))
    task = _spec({"v": {"path": str(path), "kind": "regression"}}).tasks["v"]
    assert task.target_mean == pytest.approx(2.0) and task.target_std == pytest.approx(
        math.sqrt(1.25)
    )


def test_digits_pinned_scale_is_the_shared_helpers() -> None:
    # digits pins its digit-value scale; the helper files uses gives it exactly on its pool
    pinned = DIGITS.tasks["digit-value"]
    base = load_digits_data()
    _, pool = DIGITS.source_split(len(base.y))
    computed = regression_task("digit-value", pinned.label_fn(base.y[pool]))
    assert (computed.target_mean, computed.target_std) == (pinned.target_mean, pinned.target_std)
    assert (computed.kind, computed.num_outputs) == (pinned.kind, pinned.num_outputs)


def test_classification_stays_the_default(tmp_path: Path) -> None:
    path = _csv(tmp_path / "c.csv", ["b", "a", "b"], column="label")
    task = _spec({"c": {"path": str(path)}}).tasks["c"]
    assert (task.kind, task.num_outputs, task.labels) == ("classification", 2, ("a", "b"))


@pytest.mark.parametrize(
    ("values", "row", "shown"),
    [(["1", "two", "3"], 2, "'two'"), (["1", "2", "nan"], 3, "'nan'"), (["inf", "2"], 1, "'inf'")],
)
def test_a_non_finite_or_non_numeric_value_is_refused(
    tmp_path: Path, values: list[str], row: int, shown: str
) -> None:
    path = _csv(tmp_path / "bad.csv", values)
    table = {"path": str(path), "kind": "regression", "label-column": "score"}
    with pytest.raises(
        DatasetOptionError, match=rf"task 'price'.*row {row}: label column 'score' holds {shown}"
    ):
        _spec({"price": table})


def test_a_jsonl_nan_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "y": 1}\n{"text": "b", "y": NaN}\n')
    table = {"path": str(path), "kind": "regression", "label-column": "y"}
    with pytest.raises(DatasetOptionError, match=r"task 'p'.*bad.jsonl, row 2: label column 'y'"):
        _spec({"p": table})


def test_client_files_name_the_file_of_the_bad_row(tmp_path: Path) -> None:
    root = tmp_path / "clients"
    root.mkdir()
    _csv(root / "alice.csv", ["1", "2"])
    _csv(root / "bob.csv", ["3", "x"])
    table = {"path": str(root), "client-files": True, "kind": "regression", "label-column": "score"}
    with pytest.raises(DatasetOptionError, match=r"bob.csv, row 2: label column 'score' holds 'x'"):
        _spec({"p": table})
    _csv(root / "bob.csv", ["3", "6"])
    spec = get_dataset_spec("files", {"tasks": {"q": table}})  # another name: not cached
    assert spec.task_data is not None
    data = spec.task_data("q")
    assert (
        data.y.tolist() == [1.0, 2.0, 3.0, 6.0] and data.client_ids == ("alice",) * 2 + ("bob",) * 2
    )
    assert spec.tasks["q"].target_mean == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"kind": "regresion"}, r"dataset-options tasks.p.kind: .*did you mean 'regression'"),
        ({"kind": 3}, r"dataset-options tasks.p.kind must be a string"),
        ({"kind": "regression", "labels": ["a"]}, r"takes no labels list"),
    ],
)
def test_a_bad_kind_names_dataset_options(
    tmp_path: Path, table: dict[str, Any], words: str
) -> None:
    path = _csv(tmp_path / "s.csv", ["1", "2"], column="label")
    with pytest.raises(DatasetOptionError, match=words):
        _spec({"p": {"path": str(path), **table}})


def test_a_run_config_names_dataset_options(tmp_path: Path) -> None:
    path = _csv(tmp_path / "s.csv", ["1", "x"], column="label")
    values = {
        "dataset": "files",
        "dataset-options": {"tasks": {"s": {"path": str(path), "kind": "regression"}}},
        "tasks": ["s"],
        "backbone": "text-bow",
        "pretrained": "none",
    }
    with pytest.raises(ConfigError, match="row 2: label column 'label' holds 'x'") as caught:
        build_config(values)
    assert caught.value.key == "dataset-options"


def test_an_image_folder_cannot_be_a_regression(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "1").mkdir(parents=True)
    with pytest.raises(DatasetOptionError, match="a regression task reads numbers"):
        _spec({"p": {"path": str(tmp_path / "imgs"), "kind": "regression"}})


# --------------------------------------------------------------------------- #
# A deployed device reading its own regression file
# --------------------------------------------------------------------------- #


def test_a_device_reads_its_regression_targets(tmp_path: Path) -> None:
    # Prepare: the run's regression task is digits' digit-value; the device has its own npz
    cfg = build_config({"tasks": ["digit", "digit-value"], "num-clients": 2})
    dataset = partition_spec(cfg).dataset_spec()
    path = tmp_path / "device.npz"
    np.savez(path, x=np.zeros((8, 1, 8, 8), np.float32), y=np.arange(8) * 0.5)
    config = {"data-path": str(path), "task": "digit-value"}

    # Execute
    data = device_data(config, dataset, cfg.tasks, seed=0, test_fraction=0.25, default_client_id=3)

    # Assert: float targets, every row in train or test
    assert data.y_train.dtype == np.float64 and len(data.y_train) == 6
    assert sorted([*data.y_train, *data.y_test]) == [i * 0.5 for i in range(8)]
    np.savez(path, x=np.zeros((2, 1, 8, 8), np.float32), y=np.array([1.0, np.nan]))
    with pytest.raises(DeviceDataError, match=r"'task'.*row 2: label column 'y'"):
        device_data(config, dataset, cfg.tasks, 0, 0.25, 3)


# --------------------------------------------------------------------------- #
# A federation with a files classification and a files regression task
# --------------------------------------------------------------------------- #


def test_a_files_federation_reports_the_regression_metrics(
    tmp_path: Path, server_identity: None
) -> None:
    # Prepare: two csv tasks, 24 rows each; the score is the number of "good" words
    rng = np.random.default_rng(0)
    sentiment, score = [], []
    for i in range(24):
        good = int(rng.integers(0, 4))
        words = " ".join(["good"] * good + ["bad"] * (3 - good))
        sentiment.append(f'"{words} {i}",{"pos" if good >= 2 else "neg"}')
        score.append(f'"{words} {i}",{good * 1.5}')
    (tmp_path / "sentiment.csv").write_text("text,label\n" + "\n".join(sentiment) + "\n")
    (tmp_path / "score.csv").write_text("text,label\n" + "\n".join(score) + "\n")
    options = {
        "tasks": {
            "sentiment": {"path": str(tmp_path / "sentiment.csv")},
            "score": {"path": str(tmp_path / "score.csv"), "kind": "regression"},
        }
    }
    cfg = load_experiment(
        None,
        {
            "dataset": "files",
            "dataset-options": options,
            "tasks": ["sentiment", "score"],
            "backbone": "text-bow",
            "pretrained": "none",
            "num-clients": 4,
            "num-rounds": 2,
            "partitioner": "iid",
            "output-dir": str(tmp_path / "runs"),
            "round-timeout-s": 120.0,
        },
    )
    contexts = {100 + c: device_context(100 + c, {"partition-id": c}) for c in range(4)}
    run = RunDirectory.create(cfg)

    # Execute
    run_server(InProcessGrid(contexts, cfg), cfg, run)  # type: ignore[arg-type]

    # Assert: the regression clients report MAE, RMSE and R², the others accuracy
    lines = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    evaluated = [line for line in lines if line.get("evaluate", {}).get("clients")]
    assert evaluated, "no evaluated round"
    for line in evaluated:
        rows = line["evaluate"]["clients"]
        regression = [r for r in rows if r["task"] == "score"]
        classification = [r for r in rows if r["task"] == "sentiment"]
        assert len(regression) == 2 and len(classification) == 2
        for row in regression:
            assert {"mae", "rmse", "r2"} <= set(row) and "accuracy" not in row
            assert 0 <= row["mae"] <= row["rmse"] and math.isfinite(row["r2"])
        assert all({"accuracy", "macro-f1"} <= set(row) for row in classification)


@pytest.mark.parametrize("partitioner", ["dirichlet", "pathological"])
def test_a_label_skew_partitioner_refuses_a_regression_task(
    tmp_path: Path, partitioner: str
) -> None:
    path = _csv(tmp_path / "score.csv", [str(v) for v in range(40)], column="label")
    cfg = build_config(
        {
            "dataset": "files",
            "dataset-options": {"tasks": {"score": {"path": str(path), "kind": "regression"}}},
            "tasks": ["score"],
            "backbone": "text-bow",
            "pretrained": "none",
            "num-clients": 2,
            "partitioner": partitioner,
        }
    )
    with pytest.raises(ConfigError) as caught:
        check_run_inputs(cfg)
    assert caught.value.key == "partitioner" and "regression" in str(caught.value)
