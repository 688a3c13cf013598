"""Node discovery, client-id order, held-out clients, the node wait and seeded sampling."""

from __future__ import annotations

import random
from typing import cast

import pytest
from flwr.serverapp import Grid

from fedmtl.records import ClientInfo
from strategies.nodes import (
    ClientOrderedGrid,
    NodeDirectory,
    NodeWait,
    NotEnoughNodesError,
    sample_key,
)
from tests.factories import FakeGrid


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _grid(fake: FakeGrid) -> Grid:
    return cast(Grid, fake)


def test_directory_asks_each_node_once_and_lists_nodes_by_client_id(
    server_identity: None,
) -> None:
    # Prepare: node ids in another order than the client ids they report
    fake = FakeGrid({30: "a", 10: "b", 20: "a"}, client_ids={30: 1, 10: 3, 20: 2})
    nodes = NodeDirectory(query_timeout=1.0)

    # Execute
    first = nodes.in_client_order(fake.get_node_ids(), _grid(fake))
    again = nodes.in_client_order(fake.get_node_ids(), _grid(fake))

    # Assert
    assert first == again == [30, 20, 10]
    assert len(fake.queries) == 3
    assert nodes.tasks == {30: "a", 10: "b", 20: "a"}
    assert nodes.client_of(10) == 3 and nodes.task_of(20) == "a"
    assert nodes.nodes_of({1, 3, 99}) == [10, 30]


def test_held_out_clients_are_not_listed_and_silent_nodes_come_last(
    server_identity: None,
) -> None:
    fake = FakeGrid({1: "a", 2: "a", 3: "a", 4: "a"}, silent={2}, client_ids={1: 9, 3: 7, 4: 8})
    nodes = NodeDirectory()
    ordered = nodes.in_client_order(fake.get_node_ids(), _grid(fake), excluded=frozenset({8}))
    assert ordered == [3, 1, 2]  # clients 7, 9, then the node that never said
    assert nodes.client_of(2) is None


def test_learn_and_forget() -> None:
    nodes = NodeDirectory()
    nodes.learn(5, ClientInfo(50, "t"))
    assert (nodes.client_of(5), nodes.task_of(5)) == (50, "t")
    nodes.forget()
    assert nodes.client_of(5) is None and not nodes.tasks


def test_wait_ends_past_its_deadline_and_resets_when_nodes_come() -> None:
    # Prepare
    clock = Clock()
    wait = NodeWait(timeout=10.0, clock=clock)

    # Execute / Assert: the wait starts, a node arrives in time, a new wait starts
    wait.check(connected=1, needed=2)
    clock.now = 9.0
    wait.check(connected=2, needed=2)
    clock.now = 15.0
    wait.check(connected=1, needed=2)
    clock.now = 25.0
    wait.check(connected=1, needed=2)  # exactly at the deadline: still waiting
    clock.now = 25.5
    with pytest.raises(NotEnoughNodesError, match="only 1 of the 2 nodes needed"):
        wait.check(connected=1, needed=2)


def test_sample_key_is_a_function_of_seed_phase_and_round() -> None:
    assert sample_key(None, "train", 3) is None
    assert sample_key(7, "train", 3) == sample_key(7, "train", 3)
    keys = {sample_key(7, "train", 3), sample_key(7, "evaluate", 3), sample_key(7, "train", 4)}
    assert len(keys | {sample_key(8, "train", 3)}) == 4


def test_ordered_grid_seeds_random_each_time_it_lists_nodes(server_identity: None) -> None:
    # Prepare
    fake = FakeGrid({n: "a" for n in range(6)})
    ordered = ClientOrderedGrid(_grid(fake), NodeDirectory(), NodeWait(1.0), 6, seed="7:train:1")

    # Execute: other draws between two listings do not change the next draw
    draws = []
    for _ in range(2):
        listed = ordered.get_node_ids()
        draws.append(random.sample(listed, 3))
        random.random()

    # Assert
    assert draws[0] == draws[1]
    assert ordered.client_of(0) == 100
    assert ordered.queries is fake.queries  # everything else is the real grid's


def test_ordered_grid_counts_only_the_nodes_it_lists(server_identity: None) -> None:
    # Two of three connected nodes are held out: one listed, two needed
    fake = FakeGrid({1: "a", 2: "a", 3: "a"})
    clock = Clock()
    ordered = ClientOrderedGrid(
        _grid(fake), NodeDirectory(), NodeWait(0.0, clock), 2, excluded=frozenset({101, 102})
    )
    assert ordered.get_node_ids() == [3]
    clock.now = 1.0
    with pytest.raises(NotEnoughNodesError):
        ordered.get_node_ids()
