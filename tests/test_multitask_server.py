"""The server with clients holding several tasks: what it sends, splits, averages and refuses.

Issue 13: a client holding tasks ``a`` and ``b`` receives both tasks' task-scope
arrays merged in one record and replies with both; the server splits the reply
by task, so each task group is averaged over exactly the clients holding that
task, weighted by the task's own ``num-examples``. Every number below is
computed by hand.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedMedian

from fedmtl.records import ARRAYS, TASK_ARRAYS, ClientInfo, NDArrays, from_record, to_record
from strategies.interference import client_task_similarity, reply_task_similarity
from strategies.nodes import NodeDirectory
from strategies.scoped import ScopedOptions, ScopedStrategy, task_averages
from strategies.task_groups import merged_task_arrays, node_task_arrays
from strategies.testing.fakes import FakeGrid, multitask_train_reply, train_reply

F32 = np.float32
# Node 1 holds both tasks; 2 and 4 hold a, 3 holds b (client id = node id + 100).
NODES: dict[int, str | tuple[str, ...]] = {1: ("a", "b"), 2: "a", 3: "b"}


def _heads(a: float | None = None, b: float | None = None) -> dict[str, np.ndarray]:
    out = {}
    if a is not None:
        out["heads.a.w"] = np.full(2, a, F32)
    if b is not None:
        out["heads.b.w"] = np.full(2, b, F32)
    return out


def _shared(value: float) -> dict[str, np.ndarray]:
    return {"backbone.w": np.full(2, value, F32)}


def _strategy(inner: object | None = None, tasks: tuple[str, ...] = ("a", "b")) -> ScopedStrategy:
    task_arrays = {"a": to_record(_heads(a=1.0)), "b": to_record(_heads(b=-1.0))}
    options = ScopedOptions(query_timeout=1.0, tasks=tasks)
    scoped = ScopedStrategy(inner or FedAvg(min_available_nodes=1), task_arrays, options)  # type: ignore[arg-type]
    return scoped


def _configure(strategy: ScopedStrategy, grid: FakeGrid, server_round: int = 1) -> list[Message]:
    config = ConfigRecord({})
    return list(
        strategy.configure_train(server_round, to_record(_shared(0.0)), config, cast(Grid, grid))
    )


def _sent_task_arrays(messages: list[Message]) -> dict[int, dict[str, np.ndarray]]:
    return {
        m.metadata.dst_node_id: from_record(m.content.array_records[TASK_ARRAYS])
        for m in messages
        if TASK_ARRAYS in m.content.array_records
    }


def test_a_two_task_client_receives_both_tasks_arrays_and_nothing_else(
    server_identity: None,
) -> None:
    # Execute
    sent = _sent_task_arrays(_configure(_strategy(), FakeGrid(NODES)))
    # Assert: node 1 gets a's and b's heads merged; one-task nodes only their own
    assert set(sent[1]) == {"heads.a.w", "heads.b.w"}
    np.testing.assert_array_equal(sent[1]["heads.a.w"], [1.0, 1.0])
    np.testing.assert_array_equal(sent[1]["heads.b.w"], [-1.0, -1.0])
    assert set(sent[2]) == {"heads.a.w"} and set(sent[3]) == {"heads.b.w"}


def test_each_task_is_averaged_over_exactly_its_holders_by_hand(server_identity: None) -> None:
    # Prepare
    strategy = _strategy()
    _configure(strategy, FakeGrid(NODES))
    replies = [
        multitask_train_reply(
            1, {"a": 2, "b": 6}, _shared(1.0), _heads(a=3.0, b=4.0), client_id=101
        ),
        train_reply(2, "a", 3, _shared(2.0), _heads(a=8.0), client_id=102),
        train_reply(3, "b", 2, _shared(3.0), _heads(b=0.0), client_id=103),
    ]
    # Execute
    shared, _ = strategy.aggregate_train(1, replies)
    # Assert
    # task a: clients 101 (2 examples of a) and 102 (3): (2 * 3 + 3 * 8) / 5 = 6
    # task b: clients 101 (6 examples of b) and 103 (2): (6 * 4 + 2 * 0) / 8 = 3
    # shared (FedAvg, total examples 8, 3, 2): (8 * 1 + 3 * 2 + 2 * 3) / 13 = 20 / 13
    tasks = {t: from_record(r) for t, r in strategy.current_task_arrays().items()}
    np.testing.assert_allclose(tasks["a"]["heads.a.w"], [6.0, 6.0], rtol=1e-6)
    np.testing.assert_allclose(tasks["b"]["heads.b.w"], [3.0, 3.0], rtol=1e-6)
    assert set(tasks["a"]) == {"heads.a.w"} and set(tasks["b"]) == {"heads.b.w"}
    assert shared is not None
    np.testing.assert_allclose(from_record(shared)["backbone.w"], [20 / 13] * 2, rtol=1e-6)
    # one train row per client per task, with that task's own count
    rows = [(r.client_id, r.task, r.metrics["num-examples"]) for r in strategy.rounds[1].train]
    assert rows == [(101, "a", 2.0), (101, "b", 6.0), (102, "a", 3.0), (103, "b", 2.0)]
    # round 2: node 1 receives both new averages
    sent = _sent_task_arrays(_configure(strategy, FakeGrid(NODES), server_round=2))
    np.testing.assert_allclose(sent[1]["heads.a.w"], [6.0, 6.0], rtol=1e-6)
    np.testing.assert_allclose(sent[1]["heads.b.w"], [3.0, 3.0], rtol=1e-6)


def test_a_robust_rule_gets_the_same_task_groups(server_identity: None) -> None:
    # Prepare: FedMedian -> the task rule is the coordinate-wise median per group
    strategy = _strategy(FedMedian(min_available_nodes=1))
    grid = FakeGrid({**NODES, 4: "a"})
    _configure(strategy, grid)
    replies = [
        multitask_train_reply(
            1, {"a": 1, "b": 1}, _shared(0.0), _heads(a=3.0, b=4.0), client_id=101
        ),
        train_reply(2, "a", 1, _shared(0.0), _heads(a=8.0), client_id=102),
        train_reply(3, "b", 1, _shared(0.0), _heads(b=0.0), client_id=103),
        train_reply(4, "a", 1, _shared(0.0), _heads(a=10.0), client_id=104),
    ]
    # Execute
    strategy.aggregate_train(1, replies)
    # Assert: a = median(3, 8, 10) = 8; b = median(4, 0) = 2 (the mean of two)
    assert strategy.task_rule.name == "median"
    tasks = {t: from_record(r) for t, r in strategy.current_task_arrays().items()}
    np.testing.assert_array_equal(tasks["a"]["heads.a.w"], [8.0, 8.0])
    np.testing.assert_array_equal(tasks["b"]["heads.b.w"], [2.0, 2.0])


REASONS = {
    "missing b's arrays": "keys differ (missing ['heads.b.w']",
    "an unknown task": "unknown tasks ['z'] (the run's tasks: ['a', 'b'])",
    "another task's arrays on a one-task client": "unexpected ['heads.b.w']",
    "a gradient cosine above 1": "absurd gradient cosine of tasks 'a' and 'b' = 1.5",
    "no count of its own for b": "no 'b/num-examples' in 'metrics'",
}


@pytest.mark.parametrize("fault", sorted(REASONS))
def test_a_bad_several_task_reply_is_rejected_and_not_averaged(
    server_identity: None, fault: str
) -> None:
    # Prepare: a good reply of node 2 beside the bad one
    strategy = _strategy()
    _configure(strategy, FakeGrid(NODES))
    bad, reason = _bad(fault)
    good = train_reply(2, "a", 3, _shared(2.0), _heads(a=8.0), client_id=102)
    # Execute
    strategy.aggregate_train(1, [bad, good])
    # Assert
    rejected = strategy.rounds[1].rejected
    assert [r.node_id for r in rejected] == [1] and reason in rejected[0].reason
    tasks = {t: from_record(r) for t, r in strategy.current_task_arrays().items()}
    np.testing.assert_array_equal(tasks["a"]["heads.a.w"], [8.0, 8.0])  # client 102 only
    np.testing.assert_array_equal(tasks["b"]["heads.b.w"], [-1.0, -1.0])  # untouched


def _bad(fault: str) -> tuple[Message, str]:
    builders = {
        "missing b's arrays": lambda: multitask_train_reply(
            1, {"a": 2, "b": 6}, _shared(1.0), _heads(a=3.0), client_id=101
        ),
        "an unknown task": lambda: multitask_train_reply(
            1, {"a": 2, "z": 6}, _shared(1.0), _heads(a=3.0), client_id=101
        ),
        "another task's arrays on a one-task client": lambda: train_reply(
            1, "a", 2, _shared(1.0), _heads(a=3.0, b=4.0), client_id=101
        ),
        "a gradient cosine above 1": lambda: multitask_train_reply(
            1,
            {"a": 2, "b": 6},
            _shared(1.0),
            _heads(a=3.0, b=4.0),
            client_id=101,
            cosines={("a", "b"): 1.5},
        ),
        "no count of its own for b": _without_b_count,
    }
    return builders[fault](), REASONS[fault]


def _without_b_count() -> Message:
    reply = multitask_train_reply(1, {"a": 2, "b": 6}, _shared(1.0), _heads(a=3.0, b=4.0))
    del reply.content.metric_records["metrics"]["b/num-examples"]
    return reply


def test_the_node_directory_keeps_every_task_and_restores_old_states() -> None:
    # Prepare
    nodes = NodeDirectory()
    nodes.learn(7, ClientInfo.holding(101, ["a", "b"]))
    nodes.learn(8, ClientInfo(102, "b"))
    # Execute
    restored, old = NodeDirectory(), NodeDirectory()
    restored.restore(nodes.state())
    old.restore({"node-tasks": {7: "a"}, "node-clients": {7: 101}})  # saved before node-held
    # Assert
    assert nodes.task_of(7) == "a" and nodes.tasks_of(7) == ("a", "b")
    assert nodes.tasks == {7: "a", 8: "b"} and nodes.tasks_of(9) == ()
    assert restored.held == {7: ("a", "b"), 8: ("b",)} and restored.clients == nodes.clients
    assert old.tasks_of(7) == ("a",)


def test_a_checkpoint_keeps_what_each_node_holds(server_identity: None) -> None:
    strategy = _strategy()
    _configure(strategy, FakeGrid(NODES))
    resumed = _strategy()
    resumed.load_state_dict(strategy.state_dict())
    assert resumed.nodes.held == {1: ("a", "b"), 2: ("a",), 3: ("b",)}
    sent = _sent_task_arrays(_configure(resumed, FakeGrid(NODES)))
    assert set(sent[1]) == {"heads.a.w", "heads.b.w"}


def test_merging_refuses_tasks_sharing_a_task_scope_key() -> None:
    task_arrays: dict[str, NDArrays] = {
        "a": {"backbone.x": np.zeros(1)},
        "b": {"backbone.x": np.ones(1)},
    }
    with pytest.raises(ValueError, match=r"share task-scope keys \['backbone.x'\]"):
        merged_task_arrays(task_arrays, ["a", "b"])
    assert node_task_arrays(["a"], task_arrays) is task_arrays["a"]  # one task: as it is
    assert node_task_arrays(["c"], task_arrays) is None


def test_client_side_cosines_are_a_mean_over_the_clients_reporting_them(
    server_identity: None,
) -> None:
    # Prepare: clients 101 and 104 hold both tasks and report 0.5 and -0.1
    strategy = _strategy()
    _configure(strategy, FakeGrid({**NODES, 4: ("b", "a")}))
    both = _heads(a=1.0, b=-1.0)
    replies = [
        multitask_train_reply(1, {"a": 1, "b": 1}, _shared(0.0), both, cosines={("a", "b"): 0.5}),
        train_reply(2, "a", 1, _shared(0.0), _heads(a=1.0)),
        multitask_train_reply(4, {"b": 1, "a": 1}, _shared(0.0), both, cosines={("b", "a"): -0.1}),
    ]
    # Execute
    strategy.aggregate_train(1, replies)
    # Assert: (0.5 - 0.1) / 2 = 0.2, in task_similarity's {a: {b: x}} shape
    log = strategy.rounds[1]
    assert not log.rejected
    assert log.client_task_similarity == {"a": {"b": pytest.approx(0.2)}}
    assert log.client_task_similarity_clients == {"a": {"b": 2}}
    assert client_task_similarity([]) == ({}, {})


def test_a_two_task_client_is_in_both_server_side_groups(server_identity: None) -> None:
    # Prepare: sent 0; client 1 (a and b) moves (1, 0), 2 (a) (0, 1), 3 (b) (0, -1)
    sent: NDArrays = {"backbone.w": np.zeros(2, F32)}

    def w(x: float, y: float) -> dict[str, np.ndarray]:
        return {"backbone.w": np.array([x, y], F32)}

    replies = [
        multitask_train_reply(1, {"a": 1, "b": 1}, w(1, 0)),
        train_reply(2, "a", 1, w(0, 1)),
        train_reply(3, "b", 1, w(0, -1)),
    ]
    valid = [(r, ClientInfo.from_content(r.content)) for r in replies]
    # Execute
    similarity = reply_task_similarity(valid, sent)
    # Assert: mean a = (0.5, 0.5), mean b = (0.5, -0.5): orthogonal
    assert similarity == {"a": {"b": pytest.approx(0.0, abs=1e-12)}}
    # without client 1 they would be opposite
    assert reply_task_similarity(valid[1:], sent) == {"a": {"b": pytest.approx(-1.0)}}


def test_task_averages_weigh_each_task_by_its_own_count(server_identity: None) -> None:
    # The module function on its own: client 1 has 1 example of a and 3 of b
    sent = {"a": _heads(a=0.0), "b": _heads(b=0.0)}
    replies = [
        multitask_train_reply(1, {"a": 1, "b": 3}, _shared(0.0), _heads(a=4.0, b=4.0)),
        train_reply(2, "a", 3, _shared(0.0), _heads(a=0.0)),
        train_reply(3, "b", 1, _shared(0.0), _heads(b=0.0)),
    ]
    valid = [(r, ClientInfo.from_content(r.content)) for r in replies]
    # Execute
    averages = task_averages(valid, sent)
    # Assert: a: (1 * 4 + 3 * 0) / 4 = 1; b: (3 * 4 + 1 * 0) / 4 = 3
    np.testing.assert_allclose(averages["a"]["heads.a.w"], [1.0, 1.0])
    np.testing.assert_allclose(averages["b"]["heads.b.w"], [3.0, 3.0])
    assert ARRAYS not in averages
