"""Conflict-averse (CAGrad) aggregation: maths checked against numbers computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord

from fedmtl.records import from_record, to_record
from strategies import ScopedStrategy, build_strategy
from strategies.registry import Sampling, StrategyOptionError
from strategies.testing.fakes import multitask_train_reply
from strategies.zoo.conflict_averse import cagrad_direction
from tests.factories import FakeGrid, train_reply


def test_orthogonal_task_updates_by_hand() -> None:
    # g1 = (1, 0), g2 = (0, 1): by symmetry w = (1/2, 1/2), gw = g0 = (1/2, 1/2),
    # c = alpha * ||g0|| and c / ||gw|| = alpha, so d = (1 + alpha) g0 / (1 + alpha^2)
    # = 1.5 * 0.5 / 1.25 = 0.6 per coordinate for alpha = 0.5.
    updates = np.array([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(cagrad_direction(updates, alpha=0.5), [0.6, 0.6], atol=1e-6)


def test_alpha_zero_is_the_mean_and_one_task_is_its_update() -> None:
    updates = np.array([[2.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(cagrad_direction(updates, alpha=0.0), [1.0, 2.0])
    np.testing.assert_allclose(cagrad_direction(updates[:1], alpha=0.4), [2.0, 0.0])


def test_conflicting_tasks_both_improve() -> None:
    # g1 and g2 nearly opposite: the plain mean hurts task 2 (negative inner product);
    # CAGrad's direction must not decrease either task's first-order progress.
    updates = np.array([[1.0, 0.2], [-0.6, 0.3]])
    mean = updates.mean(axis=0)
    assert mean @ updates[1] < 0
    direction = cagrad_direction(updates, alpha=0.9)
    assert direction @ updates[0] > 0 and direction @ updates[1] > mean @ updates[1]


def _arrays(values: list[float]) -> dict[str, np.ndarray]:
    return {
        "backbone.w": np.asarray(values, dtype=np.float32),
        "backbone.count": np.asarray(4, dtype=np.int64),
    }


def test_strategy_applies_cagrad_to_per_task_mean_updates(server_identity: None) -> None:
    # Prepare: global (0, 0); task a clients (2, 0) x1 and (0, 0) x1 -> mean update (1, 0);
    # task b client (0, 1) -> update (0, 1). alpha 0.5 -> (0.6, 0.6) by hand (above).
    inner = build_strategy("conflict-averse", {"alpha": 0.5}, Sampling(min_available_nodes=1))
    strategy = ScopedStrategy(inner, task_arrays={})
    grid = FakeGrid({1: "a", 2: "a", 3: "b"})
    start = to_record(_arrays([0.0, 0.0]))
    list(strategy.configure_train(1, start, ConfigRecord({}), grid))  # type: ignore[arg-type]
    replies = [
        train_reply(1, "a", 5, _arrays([2.0, 0.0])),
        train_reply(2, "a", 5, _arrays([0.0, 0.0])),
        train_reply(3, "b", 2, _arrays([0.0, 1.0])),
    ]
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    # Assert
    assert arrays is not None
    result = from_record(arrays)
    np.testing.assert_allclose(result["backbone.w"], [0.6, 0.6], atol=1e-5)
    assert result["backbone.w"].dtype == np.float32
    assert int(result["backbone.count"]) == 4  # counters averaged as FedAvg does


def test_negative_alpha_is_refused() -> None:
    with pytest.raises(StrategyOptionError, match="alpha"):
        build_strategy("conflict-averse", {"alpha": -1.0})


def test_a_client_holding_two_tasks_is_in_both_task_means(server_identity: None) -> None:
    # Prepare: global (0, 0), alpha 0 (the result is the mean of the task means).
    # Client 1 holds a and b, 4 examples -> weight 2 in each, update (2, 0);
    # client 2 (a, 2 examples) (0, 2); client 3 (b, 6 examples) (-2, 0).
    # mean a = (2 (2, 0) + 2 (0, 2)) / 4 = (1, 1); mean b = (2 (2, 0) + 6 (-2, 0)) / 8 = (-1, 0)
    # -> ((1, 1) + (-1, 0)) / 2 = (0, 0.5); FedAvg would give (-1/3, 1/3).
    inner = build_strategy("conflict-averse", {"alpha": 0.0}, Sampling(min_available_nodes=1))
    strategy = ScopedStrategy(inner, task_arrays={})
    grid = FakeGrid({1: ("a", "b"), 2: "a", 3: "b"})
    start = to_record(_arrays([0.0, 0.0]))
    list(strategy.configure_train(1, start, ConfigRecord({}), grid))  # type: ignore[arg-type]
    replies = [
        multitask_train_reply(1, {"a": 2, "b": 2}, _arrays([2.0, 0.0])),
        train_reply(2, "a", 2, _arrays([0.0, 2.0])),
        train_reply(3, "b", 6, _arrays([-2.0, 0.0])),
    ]
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    # Assert
    assert arrays is not None
    np.testing.assert_allclose(from_record(arrays)["backbone.w"], [0.0, 0.5], atol=1e-6)
