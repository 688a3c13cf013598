"""Clustered aggregation: groups by cosine distance of updates, a model per group."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import ConfigRecord

from fedmtl.records import ARRAYS, from_record, to_record
from strategies import ScopedStrategy, build_strategy
from strategies.registry import Sampling, StrategyOptionError
from strategies.zoo.clustered import cluster_updates, cosine_distances
from tests.factories import FakeGrid, train_reply

F32 = np.float32
GRID = FakeGrid({1: "a", 2: "a", 3: "b", 4: "b", 5: "b"})


def _w(*values: float) -> dict[str, np.ndarray]:
    return {"backbone.w": np.array(values, dtype=F32)}


def _sent(
    strategy: ScopedStrategy, server_round: int, arrays: dict[str, np.ndarray]
) -> dict[int, np.ndarray]:
    messages = strategy.configure_train(server_round, to_record(arrays), ConfigRecord({}), GRID)  # type: ignore[arg-type]
    return {
        m.metadata.dst_node_id: from_record(m.content.array_records[ARRAYS])["backbone.w"]
        for m in messages
    }


def test_cosine_distances_by_hand() -> None:
    updates = [np.array([1.0, 0.0]), np.array([0.0, 2.0]), np.array([1.0, 1.0]), np.zeros(2)]
    got = cosine_distances(updates)
    diagonal = 1 - 1 / math.sqrt(2)  # cos 45 degrees
    expected = [
        [0.0, 1.0, diagonal, 1.0],
        [1.0, 0.0, diagonal, 1.0],
        [diagonal, diagonal, 0.0, 1.0],
        [1.0, 1.0, 1.0, 0.0],  # a zero update agrees with nothing
    ]
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_opposite_updates_split_and_a_fixed_count_merges() -> None:
    updates = [np.array(u) for u in ([1.0, 0.0], [0.9, 0.1], [-1.0, 0.0], [-0.9, -0.1])]
    assert cluster_updates(updates) == [0, 0, 1, 1]
    assert cluster_updates(updates, num_clusters=1) == [0, 0, 0, 0]
    assert cluster_updates(updates, max_distance=2.0) == [0, 0, 0, 0]
    assert cluster_updates(updates[:1]) == [0]


def test_groups_get_their_own_weighted_mean_by_hand(server_identity: None) -> None:
    # Prepare
    inner = build_strategy("clustered", {}, Sampling(min_available_nodes=1))
    strategy = ScopedStrategy(inner)
    _sent(strategy, 1, _w(0.0, 0.0))
    replies = [
        train_reply(1, "a", 1, _w(1.0, 0.0)),
        train_reply(2, "a", 3, _w(0.9, 0.1)),
        train_reply(3, "b", 2, _w(-1.0, 0.0)),
        train_reply(4, "b", 2, _w(-0.9, -0.1)),
    ]
    # Execute
    arrays, metrics = strategy.aggregate_train(1, replies)
    sent = _sent(strategy, 2, from_record(arrays))  # type: ignore[arg-type]
    # Assert
    # group {1, 2}: (1 * [1, 0] + 3 * [0.9, 0.1]) / 4 = [0.925, 0.075]
    # group {3, 4}: (2 * [-1, 0] + 2 * [-0.9, -0.1]) / 4 = [-0.95, -0.05]
    # global: ([1 + 2.7 - 2 - 1.8, 0 + 0.3 - 0 - 0.2]) / 8 = [-0.0125, 0.0125]
    np.testing.assert_allclose(sent[1], [0.925, 0.075], atol=1e-6)
    np.testing.assert_allclose(sent[2], [0.925, 0.075], atol=1e-6)
    np.testing.assert_allclose(sent[3], [-0.95, -0.05], atol=1e-6)
    np.testing.assert_allclose(sent[4], [-0.95, -0.05], atol=1e-6)
    np.testing.assert_allclose(sent[5], [-0.0125, 0.0125], atol=1e-6)  # never trained
    np.testing.assert_allclose(from_record(arrays)["backbone.w"], [-0.0125, 0.0125], atol=1e-6)  # type: ignore[arg-type]
    assert metrics is not None and metrics["num-clusters"] == 2
    # membership: clients 1, 2 in group 0 and 3, 4 in group 1, in the round's log too
    membership = {f"cluster-of/{c}": g for c, g in ((1, 0), (2, 0), (3, 1), (4, 1))}
    assert {k: v for k, v in metrics.items() if k.startswith("cluster-of/")} == membership
    logged = strategy.rounds[1].strategy_metrics
    assert {k: v for k, v in logged.items() if k.startswith("cluster-of/")} == membership


def test_updates_are_measured_from_what_each_node_received(server_identity: None) -> None:
    # Prepare: round 1 leaves groups {1, 2} at A = [0.925, 0.075] and {3, 4} at B = [-0.95, -0.05]
    strategy = ScopedStrategy(build_strategy("clustered", {}, Sampling(min_available_nodes=1)))
    _sent(strategy, 1, _w(0.0, 0.0))
    round_one = [
        train_reply(1, "a", 1, _w(1.0, 0.0)),
        train_reply(2, "a", 3, _w(0.9, 0.1)),
        train_reply(3, "b", 2, _w(-1.0, 0.0)),
        train_reply(4, "b", 2, _w(-0.9, -0.1)),
    ]
    arrays, _ = strategy.aggregate_train(1, round_one)
    _sent(strategy, 2, from_record(arrays))  # type: ignore[arg-type]
    # Execute: every node moves its own model by the same step [0, 1]
    round_two = [
        train_reply(1, "a", 1, _w(0.925, 1.075)),
        train_reply(2, "a", 1, _w(0.925, 1.075)),
        train_reply(3, "b", 1, _w(-0.95, 0.95)),
        train_reply(4, "b", 1, _w(-0.95, 0.95)),
    ]
    _, metrics = strategy.aggregate_train(2, round_two)
    sent = _sent(strategy, 3, _w(0.0, 0.0))
    # Assert: same direction from where each stood -> one group, whose mean is
    # ([0.925 * 2 - 0.95 * 2] / 4, [1.075 * 2 + 0.95 * 2] / 4) = [-0.0125, 1.0125]
    assert metrics is not None and metrics["num-clusters"] == 1
    for node in (1, 2, 3, 4):
        np.testing.assert_allclose(sent[node], [-0.0125, 1.0125], atol=1e-6)


def test_bad_options_are_refused() -> None:
    with pytest.raises(StrategyOptionError, match="num_clusters"):
        build_strategy("clustered", {"num_clusters": 0})
    with pytest.raises(StrategyOptionError, match="max_distance"):
        build_strategy("clustered", {"max_distance": 3.0})


def test_groups_survive_a_restart_with_new_node_ids(server_identity: None) -> None:
    # Prepare: round 1 with nodes 1-4 = clients 101-104, then a checkpoint
    grid = FakeGrid({1: "a", 2: "a", 3: "b", 4: "b"})
    first = ScopedStrategy(build_strategy("clustered", {}, Sampling(min_available_nodes=1)))
    first.configure_train(1, to_record(_w(0.0, 0.0)), ConfigRecord({}), grid)  # type: ignore[arg-type]
    replies = [
        train_reply(n, t, 1, _w(s, 0.0), client_id=100 + n)
        for n, t, s in ((1, "a", 1.0), (2, "a", 1.0), (3, "b", -1.0), (4, "b", -1.0))
    ]
    arrays, _ = first.aggregate_train(1, replies)
    resumed = ScopedStrategy(build_strategy("clustered", {}, Sampling(min_available_nodes=1)))
    resumed.load_state_dict(first.state_dict(), same_nodes=False)
    # Execute: the same clients behind new node ids
    new_grid = FakeGrid(
        {7: "a", 8: "a", 9: "b", 6: "b"}, client_ids={7: 101, 8: 102, 9: 103, 6: 104}
    )
    messages = resumed.configure_train(1, arrays, ConfigRecord({}), new_grid)  # type: ignore[arg-type]
    sent = {
        m.metadata.dst_node_id: from_record(m.content.array_records[ARRAYS])["backbone.w"]
        for m in messages
    }
    # Assert: clients 101, 102 get group [1, 0]; 103, 104 get [-1, 0]
    np.testing.assert_allclose(sent[7], [1.0, 0.0])
    np.testing.assert_allclose(sent[8], [1.0, 0.0])
    np.testing.assert_allclose(sent[9], [-1.0, 0.0])
    np.testing.assert_allclose(sent[6], [-1.0, 0.0])
