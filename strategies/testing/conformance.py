"""Conformance checks every strategy used with :class:`ScopedStrategy` should pass.

Each check drives real rounds (``configure_train`` then ``aggregate_train``)
through ``ScopedStrategy(build_strategy(name, options))`` with a
:class:`~strategies.testing.fakes.FakeGrid` of four clients over two tasks
(``a``: nodes 1, 2; ``b``: nodes 3, 4), float32 shared arrays of two shapes and
one task-scope array per task. A check returns ``None`` when the strategy
conforms, raises ``AssertionError`` naming what broke, and calls
``pytest.skip`` when the strategy's traits (:mod:`strategies.testing.traits`)
say the check does not apply.

Every round a check plays must give usable arrays: ``ScopedStrategy`` checks
what the strategy returns (the keys, shapes and dtypes sent, finite values)
before anything is sent, and a round it skips fails the check with the reason.
One check (:func:`check_several_task_clients`) adds a client holding both tasks.
"""

from __future__ import annotations

import logging
import pickle
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, cast

import numpy as np
import numpy.typing as npt
import pytest
from flwr.app import ConfigRecord, Message
from flwr.serverapp import Grid

from fedmtl.records import ARRAYS, TASK_ARRAYS, NDArrays, from_record, to_record
from strategies.registry import Sampling, build_strategy
from strategies.scoped import ScopedOptions, ScopedStrategy
from strategies.testing.fakes import (
    CLIENT_ID_OFFSET,
    FakeGrid,
    multitask_train_reply,
    server_identity,
    train_reply,
)
from strategies.testing.traits import ROBUST, WEIGHTED_MEAN, traits_of

SEED = 1234
NODES: dict[int, str] = {1: "a", 2: "a", 3: "b", 4: "b"}
EXAMPLES: dict[int, int] = {1: 2, 2: 3, 3: 4, 4: 5}
SAMPLING = Sampling(fraction_train=1.0, fraction_evaluate=1.0, min_available_nodes=2)
F32 = np.float32
# (node, task, instruction, server_round) -> the node's reply, or None for no reply
Respond = Callable[[int, str, Message, int], Message | None]
Options = Mapping[str, Any] | None
Traits = Iterable[str] | None


# ------------------------------------------------------------------ the setup
def initial_shared() -> NDArrays:
    """The global shared arrays of round 1: float32, two shapes."""
    rng = np.random.default_rng(0)
    return {
        "backbone.weight": rng.standard_normal((3, 4)).astype(F32),
        "backbone.bias": rng.standard_normal(4).astype(F32),
    }


def initial_task_arrays() -> dict[str, NDArrays]:
    """Task-scope arrays of tasks ``a`` and ``b``."""
    return {
        "a": {"head.weight": np.full((2, 3), 1.0, dtype=F32)},
        "b": {"head.weight": np.full((2, 3), -1.0, dtype=F32)},
    }


def head_task_arrays() -> dict[str, NDArrays]:
    """Task-scope arrays of tasks ``a`` and ``b`` with disjoint keys (``heads.<task>.``)."""
    return {
        task: {f"heads.{task}.weight": np.full((2, 3), value, dtype=F32)}
        for task, value in (("a", 1.0), ("b", -1.0))
    }


def new_scoped(
    name: str, options: Options, task_arrays: Mapping[str, NDArrays] | None = None
) -> ScopedStrategy:
    """A fresh ``ScopedStrategy`` around ``build_strategy(name, options)``.

    Its task-scope arrays are ``task_arrays`` (default :func:`initial_task_arrays`).
    """
    inner = build_strategy(name, options, SAMPLING)
    start = initial_task_arrays() if task_arrays is None else task_arrays
    tasks = {task: to_record(arrays) for task, arrays in start.items()}
    return ScopedStrategy(inner, task_arrays=tasks, options=ScopedOptions(query_timeout=1.0))


def received(instruction: Message) -> tuple[NDArrays, NDArrays | None]:
    """The shared and (if sent) task arrays an instruction carries."""
    content = instruction.content
    records = content.array_records
    task = from_record(records[TASK_ARRAYS]) if TASK_ARRAYS in records else None
    return from_record(records[ARRAYS]), task


def _f32(array: npt.NDArray[np.generic]) -> npt.NDArray[np.float32]:
    return np.asarray(array, dtype=F32)


def _shifted(arrays: NDArrays, seed: int) -> NDArrays:
    rng = np.random.default_rng(seed)
    return {k: _f32(v) + F32(0.1) * _f32(rng.standard_normal(v.shape)) for k, v in arrays.items()}


def honest(node: int, task: str, instruction: Message, server_round: int) -> Message:
    """A client that "trains": received arrays plus a node- and round-specific step."""
    shared, task_arrays = received(instruction)
    seed = 1000 * server_round + node
    return train_reply(
        node,
        task,
        EXAMPLES.get(node, 1),
        _shifted(shared, seed),
        _shifted(task_arrays, seed + 500) if task_arrays is not None else None,
        client_id=CLIENT_ID_OFFSET + node,
    )


def play_round(
    strategy: ScopedStrategy,
    grid: FakeGrid,
    server_round: int,
    arrays: NDArrays,
    respond: Respond = honest,
) -> NDArrays:
    """Configure, collect the replies of ``respond``, aggregate; return the new shared arrays."""
    messages = strategy.configure_train(
        server_round, to_record(arrays), ConfigRecord({"lr": 0.1}), cast(Grid, grid)
    )
    replies = []
    for message in sorted(messages, key=lambda m: m.metadata.dst_node_id):
        node = message.metadata.dst_node_id
        answer = respond(node, grid.node_tasks[node], message, server_round)
        if answer is not None:
            replies.append(answer)
    result, _ = strategy.aggregate_train(server_round, replies)
    log = strategy.rounds[server_round]
    assert result is not None, (
        f"{type(strategy.inner).__name__}: round {server_round} gave no arrays "
        f"(skipped: {log.skip_reason}; rejected: {log.rejected})"
    )
    return from_record(result)


def task_state(strategy: ScopedStrategy) -> dict[str, NDArrays]:
    """The wrapper's current task-scope arrays as numpy."""
    return {task: from_record(r) for task, r in strategy.current_task_arrays().items()}


@contextmanager
def seeded(seed: int = SEED) -> Iterator[None]:
    """Seed ``random`` and NumPy's global generator; restore their states afterwards."""
    saved_random, saved_numpy = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved_random)
        np.random.set_state(saved_numpy)


@contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """Messages the ``strategies`` package (the wrapper and its parts) logs at WARNING or above."""
    messages: list[str] = []

    class _Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = _Handler(logging.WARNING)
    package_logger = logging.getLogger("strategies")
    level = package_logger.level
    package_logger.addHandler(handler)
    if package_logger.getEffectiveLevel() > logging.WARNING:
        package_logger.setLevel(logging.WARNING)
    try:
        yield messages
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(level)


def _assert_same(
    got: Mapping[str, npt.NDArray[Any]],
    want: Mapping[str, npt.NDArray[Any]],
    what: str,
    exact: bool = False,
) -> None:
    assert set(got) == set(want), f"{what}: keys {sorted(got)} != {sorted(want)}"
    for key in want:
        assert got[key].shape == want[key].shape, f"{what}: '{key}' shape changed"
        if exact:
            assert np.array_equal(got[key], want[key]), f"{what}: '{key}' differs"
        else:
            gap = float(np.max(np.abs(_f32(got[key]) - _f32(want[key]))))
            assert np.allclose(got[key], want[key], rtol=1e-5, atol=1e-6), (
                f"{what}: '{key}' differs by up to {gap:.3g}"
            )


def _assert_tasks(got: dict[str, NDArrays], want: dict[str, NDArrays], what: str) -> None:
    assert set(got) == set(want), f"{what}: tasks {sorted(got)} != {sorted(want)}"
    for task in want:
        _assert_same(got[task], want[task], f"{what}, task '{task}'", exact=True)


# ------------------------------------------------------------------ the checks
def check_identical_replies_keep_weights(
    name: str, options: Options = None, *, traits: Traits = None
) -> None:
    """(a) Replies equal to the global arrays leave them unchanged (a zero update)."""

    def echo(node: int, task: str, instruction: Message, server_round: int) -> Message:
        shared, task_arrays = received(instruction)
        return train_reply(
            node, task, EXAMPLES[node], shared, task_arrays, client_id=CLIENT_ID_OFFSET + node
        )

    with server_identity(), seeded():
        strategy, grid, arrays = new_scoped(name, options), FakeGrid(NODES), initial_shared()
        for server_round in (1, 2):
            arrays = play_round(strategy, grid, server_round, arrays, echo)
            _assert_same(arrays, initial_shared(), f"'{name}' round {server_round}")
        _assert_tasks(task_state(strategy), initial_task_arrays(), f"'{name}' task arrays")


def check_sample_weights_respected(
    name: str, options: Options = None, *, traits: Traits = None
) -> None:
    """(b) Two replies of one task with 1 and 3 examples give ``(a + 3 b) / 4``.

    Only for strategies with the ``"weighted-mean"`` trait; skipped otherwise.
    """
    with server_identity(), seeded():
        strategy = new_scoped(name, options)
        found = traits_of(strategy.inner, traits)
        if WEIGHTED_MEAN not in found:
            pytest.skip(f"'{name}' is not a weighted mean (traits: {sorted(found) or 'none'})")
        start = initial_shared()
        first = {k: _f32(v) + F32(1.0) for k, v in start.items()}
        second = {k: F32(2.0) * _f32(v) - F32(3.0) for k, v in start.items()}
        sent = {1: (1, first), 2: (3, second)}

        def weighted(node: int, task: str, instruction: Message, server_round: int) -> Message:
            count, shared = sent[node]
            _, task_arrays = received(instruction)
            return train_reply(
                node, task, count, shared, task_arrays, client_id=CLIENT_ID_OFFSET + node
            )

        arrays = play_round(strategy, FakeGrid({1: "a", 2: "a"}), 1, start, weighted)
    expected = {k: (first[k] + F32(3.0) * second[k]) / F32(4.0) for k in start}
    _assert_same(arrays, expected, f"'{name}' with num-examples 1 and 3")


def check_task_groups_separate(
    name: str, options: Options = None, *, traits: Traits = None
) -> None:
    """(c) Task ``a``'s task arrays never influence task ``b``'s, nor what ``b`` receives."""

    def loud_a(node: int, task: str, instruction: Message, server_round: int) -> Message:
        if task != "a":
            return honest(node, task, instruction, server_round)
        shared, task_arrays = received(instruction)
        assert task_arrays is not None, f"node {node} of task 'a' got no task arrays"
        loud = {k: _f32(v) + F32(100.0) for k, v in task_arrays.items()}
        return train_reply(
            node,
            task,
            EXAMPLES[node],
            _shifted(shared, 1000 * server_round + node),
            loud,
            client_id=CLIENT_ID_OFFSET + node,
        )

    runs = []
    for respond in (honest, loud_a):
        tasks, sent = _round_then_sent(new_scoped(name, options), FakeGrid(NODES), respond)
        runs.append(tasks)
        for node, task in NODES.items():
            got = sent.get(node)
            assert got is not None, f"'{name}': node {node} got no task arrays in round 2"
            _assert_same(got, tasks[task], f"'{name}': task arrays sent to node {node}", True)
    honest_run, loud_run = runs
    _assert_same(loud_run["b"], honest_run["b"], f"'{name}': task 'b' after task 'a' moved", True)
    assert not np.allclose(loud_run["a"]["head.weight"], honest_run["a"]["head.weight"]), (
        f"'{name}': task 'a' ignored its own clients"
    )


BAD_NODES: dict[int, tuple[str, str]] = {  # node: (what it sends, expected reason)
    5: ("wrong keys", "keys differ"),
    6: ("wrong shape", "expected float32[4]"),
    7: ("NaN shared value", "non-finite values in 'arrays'"),
    8: ("inf task value", "non-finite values in 'task-arrays'"),
    9: ("negative num-examples", "absurd 'num-examples'"),
    10: ("missing num-examples", "no 'num-examples'"),
    11: ("finite but absurd update", "absurd update of 'arrays'"),
}
BAD_TASKS = {5: "a", 6: "a", 7: "b", 8: "b", 9: "a", 10: "b", 11: "a"}


def misbehave(node: int, task: str, instruction: Message, server_round: int) -> Message | None:
    """Honest replies from nodes 1-4; the faults of :data:`BAD_NODES` from nodes 5-11."""
    if node not in BAD_NODES:
        return honest(node, task, instruction, server_round)
    shared, task_arrays = received(instruction)
    shared = _shifted(shared, node)
    count: float | None = 7
    if node == 5:
        shared["backbone.extra"] = np.zeros(2, dtype=F32)
    elif node == 6:
        shared["backbone.bias"] = np.zeros(5, dtype=F32)
    elif node == 7:
        shared["backbone.weight"][0, 0] = np.nan
    elif node == 8 and task_arrays is not None:
        task_arrays = {k: np.full_like(v, np.inf) for k, v in task_arrays.items()}
    elif node == 9:
        count = -3
    elif node == 10:
        count = None
    elif node == 11:
        shared = {k: np.asarray(v, dtype=F32) + F32(1e6) for k, v in shared.items()}
    return train_reply(node, task, count, shared, task_arrays, client_id=CLIENT_ID_OFFSET + node)


def check_bad_replies_rejected(
    name: str, options: Options = None, *, traits: Traits = None
) -> None:
    """(d) Malformed replies are logged, recorded as rejected and never averaged in.

    The result must equal a run that never saw them (same nodes sampled).
    """

    def good_only(node: int, task: str, instruction: Message, server_round: int) -> Message | None:
        return None if node in BAD_NODES else honest(node, task, instruction, server_round)

    results = []
    for respond in (misbehave, good_only):
        with server_identity(), seeded(), captured_warnings() as logged:
            strategy, grid = new_scoped(name, options), FakeGrid({**NODES, **BAD_TASKS})
            arrays = initial_shared()
            for server_round in (1, 2):
                arrays = play_round(strategy, grid, server_round, arrays, respond)
        results.append((arrays, task_state(strategy), strategy, logged))
    (bad_arrays, bad_tasks, bad, logged), (ref_arrays, ref_tasks, _, _) = results
    _assert_same(bad_arrays, ref_arrays, f"'{name}' with bad replies vs without")
    _assert_tasks(bad_tasks, ref_tasks, f"'{name}' with bad replies vs without")
    for server_round in (1, 2):
        rejected = {row.node_id: row.reason for row in bad.rounds[server_round].rejected}
        assert set(rejected) == set(BAD_NODES), (
            f"'{name}' round {server_round}: rejected nodes {sorted(map(str, rejected))}, "
            f"expected {sorted(BAD_NODES)}"
        )
        for node, (fault, reason) in BAD_NODES.items():
            assert reason in str(rejected[node]), f"{fault}: reason was '{rejected[node]}'"
            client = CLIENT_ID_OFFSET + node
            assert any(
                f"round {server_round}: rejected reply of client {client}" in line
                and reason in line
                for line in logged
            ), f"{fault} (client {client}) rejected without a logged reason"


def check_deterministic(name: str, options: Options = None, *, traits: Traits = None) -> None:
    """(e) Same inputs and seed, fresh instances: bit-identical arrays over three rounds."""
    runs = []
    for _ in range(2):
        with server_identity(), seeded():
            strategy, grid, arrays = new_scoped(name, options), FakeGrid(NODES), initial_shared()
            history = []
            for server_round in (1, 2, 3):
                arrays = play_round(strategy, grid, server_round, arrays)
                history.append((arrays, task_state(strategy)))
        runs.append(history)
    for server_round, (first, second) in enumerate(zip(*runs, strict=True), start=1):
        _assert_same(second[0], first[0], f"'{name}' round {server_round}, rerun", exact=True)
        _assert_tasks(second[1], first[1], f"'{name}' round {server_round}, rerun")


def check_state_survives_checkpoint(
    name: str, options: Options = None, *, traits: Traits = None
) -> None:
    """(f) ``state_dict`` after round 1, pickled, loaded into a fresh strategy: same rounds 2-3."""
    with server_identity():
        with seeded():
            original, grid = new_scoped(name, options), FakeGrid(NODES)
            after_first = play_round(original, grid, 1, initial_shared())
        blob = pickle.dumps(original.state_dict())
        restored = new_scoped(name, options)
        restored.load_state_dict(pickle.loads(blob))
        histories = []
        for strategy in (original, restored):
            arrays, history = after_first, []
            with seeded(SEED + 1):
                for server_round in (2, 3):
                    arrays = play_round(strategy, grid, server_round, arrays)
                    history.append((arrays, task_state(strategy)))
            histories.append(history)
    for server_round, (want, got) in enumerate(zip(*histories, strict=True), start=2):
        what = f"'{name}' round {server_round} after a checkpoint"
        _assert_same(got[0], want[0], what, exact=True)
        _assert_tasks(got[1], want[1], what)


def check_task_scope_robust(name: str, options: Options = None, *, traits: Traits = None) -> None:
    """(g) A robust strategy aggregates each task group with its own rule, not a mean.

    Only for strategies with the ``"robust"`` trait; skipped otherwise. Five
    clients of one task send the same arrays in both scopes, one of them a
    poisoned (sign-flipped, boosted) update: the task aggregate must equal the
    shared one. A robust plug-in strategy that fails this names its rule with a
    ``task_aggregation`` class attribute (:mod:`strategies.task_rules`).
    """
    start = initial_shared()

    def mirrored(node: int, task: str, instruction: Message, server_round: int) -> Message:
        shared, _ = received(instruction)
        sent = _shifted(shared, 1000 * server_round + node)
        if node == 5:  # the attacker: w - 20 (w' - w)
            sent = {
                k: _f32(shared[k]) - F32(20.0) * (_f32(v) - _f32(shared[k]))
                for k, v in sent.items()
            }
        return train_reply(node, task, node, sent, sent, client_id=CLIENT_ID_OFFSET + node)

    with server_identity(), seeded():
        inner = build_strategy(name, options, SAMPLING)
        found = traits_of(inner, traits)
        if ROBUST not in found:
            pytest.skip(f"'{name}' is not robust (traits: {sorted(found) or 'none'})")
        strategy = ScopedStrategy(
            inner, task_arrays={"a": to_record(start)}, options=ScopedOptions(query_timeout=1.0)
        )
        shared = play_round(strategy, FakeGrid(dict.fromkeys(range(1, 6), "a")), 1, start, mirrored)
    task = task_state(strategy)["a"]
    _assert_same(
        task, shared, f"'{name}' (task rule '{strategy.task_rule.name}'): task vs shared aggregate"
    )


# Run A: node 1 holds both tasks. Run B: node 1 holds "a" and node 5 (client id
# 100, listed before node 3's 103 as node 1's 101 is) plays node 1's part of "b".
SEVERAL: dict[int, str | tuple[str, ...]] = {1: ("a", "b"), 2: "a", 3: "b"}
SPLIT: dict[int, str | tuple[str, ...]] = {1: "a", 2: "a", 3: "b", 5: "b"}
TASK_EXAMPLES: dict[int, dict[str, int]] = {1: {"a": 2, "b": 6}, 2: {"a": 3}, 3: {"b": 4}}


def _own_step(node: int, task: str, arrays: NDArrays, server_round: int) -> NDArrays:
    """Node ``node``'s step on ``task``'s task arrays (the same whoever plays it)."""
    return _shifted(arrays, 1000 * server_round + 10 * node + (task == "b"))


def _part(arrays: NDArrays, task: str) -> NDArrays:
    return {k: v for k, v in arrays.items() if k.startswith(f"heads.{task}.")}


def check_several_task_clients(
    name: str, options: Options = None, *, traits: Traits = None
) -> None:
    """(h) A client holding both tasks gets both tasks' arrays; each task averages its holders.

    Node 1 holds tasks ``a`` and ``b`` (own examples 2 and 6), nodes 2 and 3 one
    task each. Whatever the task rule, each task's aggregate must equal the one
    of a run where node 1's two task parts come from two one-task clients with
    those examples; and in round 2 node 1 must receive both new aggregates.
    """

    def several(node: int, task: str, instruction: Message, server_round: int) -> Message:
        shared, task_arrays = received(instruction)
        assert task_arrays is not None, f"node {node} got no task arrays"
        held = SEVERAL[node]
        tasks = (held,) if isinstance(held, str) else held
        want = {k for t in tasks for k in head_task_arrays()[t]}
        assert set(task_arrays) == want, (
            f"'{name}': node {node} holding {list(tasks)} got task arrays {sorted(task_arrays)}"
        )
        stepped = {
            k: v
            for t in tasks
            for k, v in _own_step(node, t, _part(task_arrays, t), server_round).items()
        }
        return multitask_train_reply(
            node,
            TASK_EXAMPLES[node],
            _shifted(shared, 1000 * server_round + node),
            stepped,
            client_id=CLIENT_ID_OFFSET + node,
        )

    def split(node: int, task: str, instruction: Message, server_round: int) -> Message:
        shared, task_arrays = received(instruction)
        assert task_arrays is not None, f"node {node} got no task arrays"
        source = 1 if node == 5 else node
        return train_reply(
            node,
            task,
            TASK_EXAMPLES[source][task],
            _shifted(shared, 1000 * server_round + node),
            _own_step(source, task, task_arrays, server_round),
            client_id=100 if node == 5 else CLIENT_ID_OFFSET + node,
        )

    runs = []
    for nodes, respond in ((SEVERAL, several), (SPLIT, split)):
        strategy = new_scoped(name, options, head_task_arrays())
        tasks, sent = _round_then_sent(strategy, FakeGrid(nodes, client_ids={5: 100}), respond)
        runs.append(tasks)
        first = sent.get(1)
        assert first is not None, f"'{name}': node 1 got no task arrays in round 2"
        want = {**tasks["a"], **tasks["b"]} if nodes is SEVERAL else tasks["a"]
        _assert_same(first, want, f"'{name}': task arrays sent to node 1 in round 2", True)
    _assert_tasks(runs[0], runs[1], f"'{name}': a client holding two tasks vs two clients")


def _round_then_sent(
    strategy: ScopedStrategy, grid: FakeGrid, respond: Respond
) -> tuple[dict[str, NDArrays], dict[int, NDArrays | None]]:
    """Play round 1 with ``respond``; the task state, and each node's task arrays of round 2."""
    with server_identity(), seeded():
        play_round(strategy, grid, 1, initial_shared(), respond)
        tasks = task_state(strategy)
        messages = strategy.configure_train(
            2, to_record(initial_shared()), ConfigRecord(), cast(Grid, grid)
        )
        sent = {m.metadata.dst_node_id: received(m)[1] for m in messages}
    return tasks, sent


Check = Callable[..., None]
CHECKS: dict[str, Check] = {
    "identical-replies-keep-weights": check_identical_replies_keep_weights,
    "sample-weights-respected": check_sample_weights_respected,
    "task-groups-separate": check_task_groups_separate,
    "bad-replies-rejected": check_bad_replies_rejected,
    "deterministic": check_deterministic,
    "state-survives-checkpoint": check_state_survives_checkpoint,
    "task-scope-robust": check_task_scope_robust,
    "several-task-clients": check_several_task_clients,
}


class StrategyConformance:
    """Subclass in a test module (named ``Test...``) to run every check on a strategy.

    Attributes
    ----------
    strategy : str
        A registered name (``"fedadam"``) or ``"package.module:ClassName"``.
    options : mapping, optional
        Constructor options, as an experiment's ``strategy-options``.
    traits : iterable of str, optional
        Overrides the strategy's ``conformance_traits`` / the built-in table.
    """

    strategy: ClassVar[str] = ""
    options: ClassVar[Mapping[str, Any] | None] = None
    traits: ClassVar[Iterable[str] | None] = None

    def _run(self, check: Check) -> None:
        assert self.strategy, f"{type(self).__name__} must set `strategy = '...'`"
        check(self.strategy, self.options, traits=self.traits)

    def test_identical_replies_keep_weights(self) -> None:
        """(a) Zero update keeps the weights."""
        self._run(check_identical_replies_keep_weights)

    def test_sample_weights_respected(self) -> None:
        """(b) Weighted means weigh by ``num-examples``."""
        self._run(check_sample_weights_respected)

    def test_task_groups_separate(self) -> None:
        """(c) Task groups do not leak into each other."""
        self._run(check_task_groups_separate)

    def test_bad_replies_rejected(self) -> None:
        """(d) Bad replies are rejected, logged and not averaged in."""
        self._run(check_bad_replies_rejected)

    def test_deterministic(self) -> None:
        """(e) Same seed, same arrays."""
        self._run(check_deterministic)

    def test_state_survives_checkpoint(self) -> None:
        """(f) Resuming from ``state_dict`` changes nothing."""
        self._run(check_state_survives_checkpoint)

    def test_task_scope_robust(self) -> None:
        """(g) Robust strategies aggregate the task scope with their own rule."""
        self._run(check_task_scope_robust)

    def test_several_task_clients(self) -> None:
        """(h) A client holding two tasks is in both task groups, and only there."""
        self._run(check_several_task_clients)
