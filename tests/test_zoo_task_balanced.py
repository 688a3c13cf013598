"""Task-balanced FedAvg: maths checked against numbers computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fedmtl.records import from_record, to_record
from strategies import ScopedStrategy, build_strategy
from strategies.registry import Sampling
from strategies.testing.fakes import multitask_train_reply
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


def test_a_client_holding_two_tasks_counts_in_both_with_its_examples_split() -> None:
    # client 1 holds a and b with 4 examples -> 2 in each; client 2: a, 2; client 3: b, 6.
    # N_a = 2 + 2 = 4, N_b = 2 + 6 = 8, T = 2:
    # w1 = 2/4/2 + 2/8/2 = 0.375, w2 = 2/4/2 = 0.25, w3 = 6/8/2 = 0.375
    weights = task_balanced_weights([("a", "b"), "a", "b"], [4.0, 2.0, 6.0])
    assert weights == pytest.approx([0.375, 0.25, 0.375])
    # a one-task client given as a 1-tuple is weighted as before, bit for bit
    assert task_balanced_weights([("a",), ("b",)], [1.0, 3.0]) == task_balanced_weights(
        ["a", "b"], [1.0, 3.0]
    )
    with pytest.raises(ValueError, match="at least one task"):
        task_balanced_weights([()], [1.0])


def test_shared_average_with_a_two_task_client_by_hand(server_identity: None) -> None:
    # the weights above on shared values 0, 4, 8: 0.375*0 + 0.25*4 + 0.375*8 = 4.0
    replies = [
        multitask_train_reply(1, {"a": 2, "b": 2}, _arrays(0.0)),
        train_reply(2, "a", 2, _arrays(4.0)),
        train_reply(3, "b", 6, _arrays(8.0)),
    ]
    arrays, _ = _scoped().aggregate_train(1, replies)
    assert arrays is not None
    np.testing.assert_allclose(from_record(arrays)["backbone.w"], [4.0, 4.0], rtol=1e-6)
