"""Ditto: the server sends ``personal-lambda``; clients keep a proximal personal model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord

from fedmtl.assembly import resolve_run
from fedmtl.client_app import handle_evaluate, handle_train
from fedmtl.config import build_config, partition_spec
from fedmtl.data import client_data
from fedmtl.models.state import import_arrays
from fedmtl.records import CONFIG, PERSONAL_LAMBDA, ROUTINE, from_record, to_record
from fedmtl.routines import PERSONAL_STATE
from fedmtl.run_model import fresh_model
from fedmtl.training import evaluate
from strategies import ScopedStrategy, build_strategy
from strategies.registry import Sampling, StrategyOptionError
from tests.client_helpers import (
    distance,
    evaluate_message,
    global_arrays,
    node_context,
    reply_arrays,
    train_message,
)
from tests.factories import FakeGrid

CFG = resolve_run(build_config({"strategy": "ditto", "num-clients": 3}))  # preset applied
DITTO = {"client_routine": "ditto"}  # what Ditto's configure_train/evaluate send with lambda


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)


def test_server_sends_its_routine_and_lambda_in_train_and_evaluate_config(
    server_identity: None,
) -> None:
    # Prepare
    strategy = ScopedStrategy(
        build_strategy("ditto", {"lam": 0.5}, Sampling(min_available_nodes=1))
    )
    arrays = to_record({"backbone.w": np.zeros(2, dtype=np.float32)})
    grid = FakeGrid({1: "a", 2: "b"})
    # Execute
    train = list(strategy.configure_train(1, arrays, ConfigRecord({}), grid))  # type: ignore[arg-type]
    evals = list(strategy.configure_evaluate(1, arrays, ConfigRecord({}), grid))  # type: ignore[arg-type]
    # Assert
    configs = [m.content.config_records[CONFIG] for m in train + evals]
    assert [c[PERSONAL_LAMBDA] for c in configs] == [0.5] * 4
    assert [c[ROUTINE] for c in configs] == ["ditto"] * 4
    with pytest.raises(StrategyOptionError, match="lam"):
        build_strategy("ditto", {"lam": -1.0})


def test_global_reply_is_the_same_as_without_the_personal_model(server_identity: None) -> None:
    # Prepare
    shared, task = global_arrays(CFG, "digit")
    # Execute
    with_ditto = handle_train(
        train_message(shared, task, personal_lambda=0.1, **DITTO), node_context(0), CFG
    )
    without = handle_train(train_message(shared, task), node_context(0), CFG)
    # Assert: the personal model trains beside the global one, never into it
    for key, value in reply_arrays(without).items():
        np.testing.assert_array_equal(reply_arrays(with_ditto)[key], value, err_msg=key)


def test_larger_lambda_keeps_the_personal_model_closer_to_the_global_one(
    server_identity: None,
) -> None:
    # Prepare
    shared, task = global_arrays(CFG, "digit")
    received = {**shared, **task}
    gaps = []
    for lam in (0.0, 1.0, 10.0):
        context = node_context(0)
        # Execute
        handle_train(train_message(shared, task, personal_lambda=lam, **DITTO), context, CFG)
        personal = from_record(context.state.array_records[PERSONAL_STATE])
        gaps.append(distance(personal, received))
    # Assert: ||v - w|| shrinks as lambda grows (and lambda 0 is plain local training)
    assert gaps[0] > gaps[1] > gaps[2] > 0, gaps


def test_evaluate_uses_the_personal_model_when_asked(server_identity: None) -> None:
    # Prepare
    shared, task = global_arrays(CFG, "digit")
    context = node_context(0)
    handle_train(train_message(shared, task, personal_lambda=0.1, **DITTO), context, CFG)
    data = client_data(partition_spec(CFG), 0)
    by_hand = fresh_model(CFG)
    import_arrays(by_hand, from_record(context.state.array_records[PERSONAL_STATE]))
    expected = evaluate(by_hand, data.task, data.x_test, data.y_test)
    # Execute
    personal = handle_evaluate(
        evaluate_message(shared, task, personal_lambda=0.1, **DITTO), context, CFG
    )
    global_ = handle_evaluate(evaluate_message(shared, task), context, CFG)
    # Assert
    metrics = personal.content.metric_records["metrics"]
    assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert metrics["accuracy"] == pytest.approx(expected["accuracy"])
    assert global_.content.metric_records["metrics"]["loss"] != pytest.approx(expected["loss"])
