"""A deployed client: its own file from the node config, clear errors, state on its disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict
from sklearn.datasets import load_digits

from fedmtl.client_app import handle_evaluate, handle_train
from fedmtl.config import build_config, partition_spec
from fedmtl.data.device import DeviceDataError, device_data
from tests.client_helpers import evaluate_message, global_arrays, train_message

CFG = build_config({"tasks": ["digit", "parity"], "num-clients": 2})


@pytest.fixture
def parity_file(tmp_path: Path) -> Path:
    digits = load_digits()
    x = digits.images[:120, None].astype(np.float32) / 16.0
    path = tmp_path / "device.npz"
    np.savez(path, x=x, y=digits.target[:120] % 2)
    return path


def _device(node_config: dict[str, object], node_id: int = 7, run_id: int = 1) -> Context:
    return Context(
        run_id=run_id, node_id=node_id, node_config=node_config, state=RecordDict(), run_config={}
    )  # type: ignore[arg-type]


def test_device_data_is_read_checked_and_split(parity_file: Path) -> None:
    dataset = partition_spec(CFG).dataset_spec()
    config = {"data-path": str(parity_file), "task": "parity", "client-id": 42}
    data = device_data(config, dataset, CFG.tasks, seed=0, test_fraction=0.25, default_client_id=7)
    assert data.client_id == 42 and data.task == "parity"
    assert len(data.y_train) == 90 and len(data.y_test) == 30
    assert set(np.unique(data.y_train)) == {0, 1}
    again = device_data(config, dataset, CFG.tasks, 0, 0.25, 7)
    np.testing.assert_array_equal(again.y_test, data.y_test)  # seeded split


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        ({"task": "sentiment"}, "task", "allowed: ['digit', 'parity']"),
        ({"data-path": "/nowhere/data.npz"}, "data-path", "does not exist"),
        ({"task": None}, "task", "missing"),
    ],
)
def test_bad_node_config_names_the_key(
    parity_file: Path, change: dict[str, object], key: str, words: str
) -> None:
    config = {"data-path": str(parity_file), "task": "parity", **change}
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(DeviceDataError, match=f"'{key}'.*{words}".replace("[", r"\[")):
        device_data(config, partition_spec(CFG).dataset_spec(), CFG.tasks, 0, 0.25, 7)


def test_labels_outside_the_task_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "digits.npz"
    np.savez(path, x=np.zeros((4, 1, 8, 8), np.float32), y=np.array([0, 1, 7, 1]))
    config = {"data-path": str(path), "task": "parity"}
    with pytest.raises(DeviceDataError, match=r"'task'.*label '7'"):
        device_data(config, partition_spec(CFG).dataset_spec(), CFG.tasks, 0, 0.25, 7)


def test_head_survives_a_device_restart(
    parity_file: Path, tmp_path: Path, server_identity: None
) -> None:
    # Prepare: a device with its data and a state directory
    torch.set_num_threads(1)
    config = {"data-path": str(parity_file), "task": "parity", "state-dir": str(tmp_path / "s")}
    shared, _ = global_arrays(CFG, "parity")
    before_restart = _device(config)
    handle_train(train_message(shared, {}), before_restart, CFG)
    evaluated = handle_evaluate(evaluate_message(shared, {}), before_restart, CFG)
    # Execute: the SuperNode restarts (a new Context, empty state)
    after_restart = _device(config)
    again = handle_evaluate(evaluate_message(shared, {}), after_restart, CFG)
    # Assert: the trained head came back from the device's disk
    first = evaluated.content.metric_records["metrics"]
    second = again.content.metric_records["metrics"]
    assert second["loss"] == first["loss"] and second["accuracy"] == first["accuracy"]
    assert len(after_restart.state) == 0
    fresh = handle_evaluate(
        evaluate_message(shared, {}), _device({**config, "state-dir": str(tmp_path / "x")}), CFG
    )
    assert fresh.content.metric_records["metrics"]["loss"] != first["loss"]
    # A later run on the same device starts from the pretrained head, as its server does
    next_run = handle_evaluate(evaluate_message(shared, {}), _device(config, run_id=2), CFG)
    assert (
        next_run.content.metric_records["metrics"]["loss"]
        == fresh.content.metric_records["metrics"]["loss"]
    )
