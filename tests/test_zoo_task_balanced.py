"""Task-balanced FedAvg: maths checked against numbers computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fedmtl.records import from_record, to_record
from strategies import ScopedStrategy, build_strategy
from strategies.registry import Sampling
from strategies.zoo.task_balanced import task_balanced_weights
from tests.factories import error_reply, train_reply


def _arrays(value: float) -> dict[str, np.ndarray]:
    return {"backbone.w": np.full(2, value, dtype=np.float32)}


def _scoped() -> ScopedStrategy:
    inner = build_strategy("task-balanced", {}, Sampling(min_available_nodes=1))
    strategy = ScopedStrategy(inner, task_arrays={})
    strategy.expect_shared(to_record(_arrays(0.0)))
    return strategy


def test_weights_give_each_task_an_equal_share() -> None:
    # task a: 1 and 3 examples -> 1/4/2, 3/4/2; task b: 10 examples -> 10/10/2
    weights = task_balanced_weights(["a", "a", "b"], [1.0, 3.0, 10.0])
    assert weights == pytest.approx([0.125, 0.375, 0.5])
    assert task_balanced_weights(["a"], [0.0]) == [0.0]


def test_shared_average_by_hand(server_identity: None) -> None:
    # Prepare: FedAvg would give (1*0 + 3*4 + 10*10) / 14 = 8.0;
    # task-balanced gives 0.125*0 + 0.375*4 + 0.5*10 = 6.5
    replies = [
        train_reply(1, "a", 1, _arrays(0.0)),
        train_reply(2, "a", 3, _arrays(4.0)),
        train_reply(3, "b", 10, _arrays(10.0)),
        error_reply(4, "crashed"),
    ]
    # Execute
    arrays, metrics = _scoped().aggregate_train(1, replies)
    # Assert
    assert arrays is not None
    np.testing.assert_allclose(from_record(arrays)["backbone.w"], [6.5, 6.5], rtol=1e-6)
    assert metrics is not None


def test_one_task_reduces_to_fedavg(server_identity: None) -> None:
    # (1*2 + 3*6) / 4 = 5.0, as plain FedAvg
    replies = [train_reply(1, "a", 1, _arrays(2.0)), train_reply(2, "a", 3, _arrays(6.0))]
    arrays, _ = _scoped().aggregate_train(1, replies)
    assert arrays is not None
    np.testing.assert_allclose(from_record(arrays)["backbone.w"], [5.0, 5.0], rtol=1e-6)
