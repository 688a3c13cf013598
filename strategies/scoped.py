"""Make any Flower strategy multi-task aware.

:class:`ScopedStrategy` wraps an inner Flower ``Strategy``. The inner strategy
sees exactly what a stock strategy expects: replies holding one ArrayRecord
(the **shared** scope, ``"arrays"``) and one MetricRecord (``num-examples``,
``loss``). The wrapper adds what Flower lacks for multi-task learning:

* the **task** scope (``"task-arrays"``) is aggregated per task group with a
  :mod:`strategies.task_rules` rule (by default the inner strategy's own rule:
  the median for FedMedian, Krum for Krum, ..., else the ``num-examples``-weighted
  mean) and each client receives only the copies of its own tasks (a client
  holding several tasks gets them all merged, and its reply is split back by
  task: :mod:`strategies.task_groups`);
* every reply is **validated before aggregation** (:mod:`strategies.replies`);
  a bad reply is logged and counted, never averaged in;
* what the inner strategy returns, and each task average, is **validated
  before it is sent** (:mod:`strategies.aggregate_checks`); a round whose
  aggregation raises or returns wrong keys, shapes or non-finite values keeps
  the previous weights and is logged as skipped, with the reason;
* nodes are listed in client-id order, held-out clients left out, with a
  deadline for the minimum number of nodes and seeded sampling
  (:mod:`strategies.nodes`);
* each round's client rows, rejections, failures, bytes, outcome and the inner
  strategy's metrics go to a :class:`~strategies.round_log.RoundLog`;
* the screened train replies pass through ``stages`` (:class:`~strategies.privacy.ReplyStage`:
  uniform weights, differential privacy's clipping and noise) before either scope
  is aggregated.

Local-scope weights are never seen: clients do not send them.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedmtl.metrics import ClientRow, summarize_rows
from fedmtl.records import (
    ARRAYS,
    CONFIG,
    TASK_ARRAYS,
    NDArrays,
    from_record,
    record_nbytes,
    to_record,
)
from strategies.aggregate_checks import (
    InvalidAggregateError,
    checked_shared,
    checked_task_average,
    finite_scalars,
)
from strategies.interference import record_similarity
from strategies.nodes import (
    ClientOrderedGrid,
    NodeDirectory,
    NodeWait,
    NotEnoughNodesError,
    sample_key,
)
from strategies.privacy import ReplyStage, SentArrays, apply_stages, load_stage_states
from strategies.replies import Expected, check_arrays, spec_of, strip_reply
from strategies.round_log import RoundLog
from strategies.screening import ValidReply, screen_replies
from strategies.state import load_strategy_state, strategy_state
from strategies.task_groups import node_task_arrays, task_groups
from strategies.task_rules import MeanRule, TaskRule, task_rule, task_rule_names

# ClientOrderedGrid, NotEnoughNodesError, check_arrays and spec_of are re-exported:
# callers imported them from here before the wrapper was split.
__all__ = [
    "ClientOrderedGrid",
    "NotEnoughNodesError",
    "ScopedOptions",
    "ScopedStrategy",
    "check_arrays",
    "evaluate_instructions",
    "spec_of",
    "task_averages",
    "task_metrics",
    "with_task_arrays",
]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScopedOptions:
    """How :class:`ScopedStrategy` checks replies, lists nodes and evaluates.

    Attributes
    ----------
    query_timeout : float
        Seconds to wait when asking new nodes which task they hold.
    max_examples : int
        Replies claiming more examples than this are rejected as absurd.
    evaluate_every : int
        Evaluate in rounds that are multiples of this (and in ``final_round``).
    final_round : int, optional
        The run's last round, always evaluated.
    excluded_clients : frozenset of int
        Client ids never sampled (held out as unseen clients; see
        :meth:`ScopedStrategy.evaluate_nodes`).
    evaluate_panel : frozenset of int, optional
        If given, only these clients are evaluated (among those the inner strategy samples).
    node_wait_timeout : float
        Seconds to wait for the inner strategy's ``min_available_nodes`` before
        giving up with :class:`~strategies.nodes.NotEnoughNodesError`.
    sampling_seed : int, optional
        Makes each round's sample a function of (seed, phase, round) only
        (:func:`strategies.nodes.sample_key`).
    max_update_ratio : float
        Train replies whose shared or task arrays moved more than this many times
        the norm of what was sent (at least 1) are rejected as absurd.
    task_aggregation : str
        The rule aggregating each task group's task arrays
        (:func:`strategies.task_rules.task_rule`): ``"auto"`` follows the inner strategy.
    tasks : tuple of str
        The run's tasks: a reply naming another task is rejected (empty: not checked).
    """

    query_timeout: float = 120.0
    max_examples: int = 10_000_000
    evaluate_every: int = 1
    final_round: int | None = None
    excluded_clients: frozenset[int] = frozenset()
    evaluate_panel: frozenset[int] | None = None
    node_wait_timeout: float = 300.0
    sampling_seed: int | None = None
    max_update_ratio: float = 1000.0
    task_aggregation: str = "auto"
    tasks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Freeze the client sets; refuse values that would switch a check off (NaN too)."""
        object.__setattr__(self, "excluded_clients", frozenset(self.excluded_clients))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.evaluate_panel is not None:
            object.__setattr__(self, "evaluate_panel", frozenset(self.evaluate_panel))
        limits = {
            "query_timeout": self.query_timeout > 0,
            "max_examples": self.max_examples >= 1,
            "evaluate_every": self.evaluate_every >= 1,
            "node_wait_timeout": self.node_wait_timeout >= 0,
            "max_update_ratio": self.max_update_ratio > 0,
        }
        for name, ok in limits.items():
            if not ok:
                raise ValueError(f"ScopedOptions.{name} is out of range: {getattr(self, name)}")
        if self.task_aggregation not in task_rule_names():
            raise ValueError(
                f"ScopedOptions.task_aggregation '{self.task_aggregation}' is not one of "
                f"{task_rule_names()}"
            )

    def evaluates(self, server_round: int) -> bool:
        """Whether clients are evaluated after ``server_round`` (0 is the initial model)."""
        return server_round % self.evaluate_every == 0 or server_round == self.final_round

    def panel_only(
        self, messages: list[Message], client_of: Callable[[int], int | None]
    ) -> list[Message]:
        """The evaluation messages to the panel's clients (all of them without a panel)."""
        panel = self.evaluate_panel
        if panel is None:
            return messages
        return [m for m in messages if client_of(m.metadata.dst_node_id) in panel]

    def expected(self) -> Expected:
        """What any valid reply holds before a round adds what it sent: limits, tasks."""
        return Expected(
            self.max_examples,
            max_update_ratio=self.max_update_ratio,
            run_tasks=frozenset(self.tasks),
        )


class ScopedStrategy(Strategy):
    """Hand the shared scope to ``inner``; aggregate the task scope per task.

    Parameters
    ----------
    inner : Strategy
        Any Flower message-based strategy; it aggregates ``"arrays"``.
    task_arrays : mapping of str to ArrayRecord, optional
        Initial task-scope arrays for each task (empty when the run has no task scope).
    options : ScopedOptions, optional
        Reply limits, node listing and evaluation schedule (defaults if omitted).
    stages : sequence of ReplyStage, optional
        Applied in order to the valid train replies before aggregation (:mod:`strategies.privacy`).

    Attributes
    ----------
    task_rule : TaskRule
        How each task group's task arrays are aggregated (``options.task_aggregation``).
    rounds : dict of int to RoundLog
        What happened in each round (round 0: the initial evaluation).
    nodes : NodeDirectory
        Each node's client id and tasks.
    round_offset : int
        Added to every round number Flower passes in (set when resuming), so
        round ``1`` of a run resumed after round ``R`` is ``R + 1``.

    Notes
    -----
    The inner strategy samples from the nodes listed in client-id order, not by
    node id (random per connection), with ``random`` seeded per (seed, phase,
    round) when ``sampling_seed`` is set: the same clients are sampled in every
    run of an experiment, and in a resumed run (:mod:`strategies.nodes`).
    """

    def __init__(
        self,
        inner: Strategy,
        task_arrays: Mapping[str, ArrayRecord] | None = None,
        options: ScopedOptions | None = None,
        stages: Sequence[ReplyStage] = (),
    ) -> None:
        self.inner = inner
        self.stages = tuple(stages)
        self.options = options = options or ScopedOptions()
        self.task_rule = task_rule(options.task_aggregation, inner)
        self.task_arrays: dict[str, NDArrays] = {
            task: from_record(record) for task, record in (task_arrays or {}).items()
        }
        self.nodes = NodeDirectory(options.query_timeout)
        self.rounds: dict[int, RoundLog] = defaultdict(RoundLog)
        self.round_offset = 0
        self._wait = NodeWait(options.node_wait_timeout)
        # What valid replies hold; expect_shared adds the shared arrays sent each round.
        self._expected = options.expected()
        self._outbox: list[Message] = []  # the last messages sent, to name failed nodes

    def summary(self) -> None:
        """Log the inner strategy's summary and the task groups."""
        logger.info(
            "ScopedStrategy over %s; task scope for %s (rule: %s)",
            type(self.inner).__name__,
            sorted(self.task_arrays) or "no task",
            self.task_rule.name,
        )
        self.inner.summary()

    def expect_shared(self, arrays: ArrayRecord) -> None:
        """Check train replies against ``arrays``, the shared arrays sent this round.

        :meth:`configure_train` calls it; a test that aggregates without configuring too.
        """
        self._expected = replace(self._expected, shared=spec_of(arrays), sent=from_record(arrays))

    # ------------------------------------------------------------------ config
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Let the inner strategy sample and configure; add each node's task arrays."""
        server_round += self.round_offset
        self.expect_shared(arrays)
        ordered = self._ordered(grid, "train", server_round)
        messages = list(self.inner.configure_train(server_round, arrays, config, ordered))
        return self._personalise(messages, grid, self.rounds[server_round])

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Same as training: the inner strategy samples, we add task arrays.

        Rounds that are not evaluation rounds (``evaluate_every``) send nothing;
        with an evaluation panel, only the panel's clients are sent anything.
        """
        server_round += self.round_offset
        if not self.options.evaluates(server_round):
            return []
        ordered = self._ordered(grid, "evaluate", server_round)
        messages = list(self.inner.configure_evaluate(server_round, arrays, config, ordered))
        messages = self.options.panel_only(messages, self.nodes.client_of)
        return self._personalise(messages, grid, self.rounds[server_round])

    def evaluate_nodes(
        self,
        client_ids: Iterable[int],
        arrays: ArrayRecord,
        config: ConfigRecord,
        grid: Grid,
        timeout: float,
    ) -> RoundLog:
        """Evaluate the given clients (e.g. held-out ones) outside the round loop.

        Each gets ``arrays`` and its task's arrays; replies are validated as in a
        round and logged in the returned :class:`RoundLog`, not in :attr:`rounds`.
        """
        self.nodes.discover(grid.get_node_ids(), grid)
        messages = evaluate_instructions(self.nodes.nodes_of(client_ids), arrays, config)
        log = RoundLog()
        replies = grid.send_and_receive(self._personalise(messages, grid, log), timeout=timeout)
        self._screen(0, replies, train=False, log=log)
        return log

    def _ordered(self, grid: Grid, phase: str, server_round: int) -> Grid:
        """The grid the inner strategy samples from (see :class:`ClientOrderedGrid`)."""
        needed = int(getattr(self.inner, "min_available_nodes", 1))
        seed = sample_key(self.options.sampling_seed, phase, server_round)
        excluded = self.options.excluded_clients
        return cast(Grid, ClientOrderedGrid(grid, self.nodes, self._wait, needed, excluded, seed))

    def _personalise(self, messages: list[Message], grid: Grid, log: RoundLog) -> list[Message]:
        """Each message gets its node's task arrays; count the bytes sent."""
        self.nodes.discover([m.metadata.dst_node_id for m in messages], grid)
        out = []
        for message in messages:
            node = message.metadata.dst_node_id
            own = node_task_arrays(self.nodes.tasks_of(node), self.task_arrays)
            if own is not None:
                message = with_task_arrays(message, own)
            log.bytes_down += sum(record_nbytes(r) for r in message.content.array_records.values())
            out.append(message)
        self._outbox = out  # the Grid writes each message's id into it when sending
        return out

    def _screen(
        self, server_round: int, replies: Iterable[Message], train: bool, log: RoundLog
    ) -> list[ValidReply]:
        """Log bad replies and failures into ``log``; the valid replies, by client id."""
        expected = replace(self._expected, tasks=self.task_arrays)
        return screen_replies(
            replies,
            expected if train else self.options.expected(),  # identity and metrics only
            train=train,
            log=log,
            nodes=self.nodes,
            sent=self._outbox,
            server_round=server_round,
        )

    # -------------------------------------------------------------- aggregation
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate replies, aggregate shared (inner) and task scope, validate the results.

        A round with no valid reply, or whose aggregation raises or returns
        something unusable, returns ``(None, None)``: Flower then keeps the
        current global arrays, and the task arrays stay as they were too.
        """
        server_round += self.round_offset
        log = self.rounds[server_round]
        valid = self._screen(server_round, replies, train=True, log=log)
        sent = SentArrays(self._expected.sent or {}, self.task_arrays)
        valid = apply_stages(self.stages, server_round, valid, sent, log)
        if not valid:
            return self._skip(server_round, "no valid training reply")
        record_similarity(log, valid, self._expected.sent)
        name = type(self.inner).__name__
        try:
            arrays, metrics = self.inner.aggregate_train(
                server_round, [strip_reply(reply, True) for reply, _ in valid]
            )
        except Exception as exc:  # a strategy failure costs the round, not the run
            return self._skip(server_round, f"{name} failed to aggregate: {exc!r}")
        log.strategy_metrics = finite_scalars(metrics)
        try:
            shared = checked_shared(arrays, self._expected.shared, name)
            tasks = task_averages(valid, self.task_arrays, self.task_rule)
        except InvalidAggregateError as exc:
            return self._skip(server_round, str(exc))
        self.task_arrays.update(tasks)
        return shared, task_metrics(log.train, metrics)

    def _skip(self, server_round: int, reason: str) -> tuple[None, None]:
        self.rounds[server_round].skip(reason)
        logger.warning("round %d skipped, previous weights kept: %s", server_round, reason)
        return None, None

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Record every client's metrics; return per-task means and worst clients."""
        server_round += self.round_offset
        valid = self._screen(server_round, replies, train=False, log=self.rounds[server_round])
        if not valid:
            return None
        try:  # keep stateful inner strategies informed; their cross-task mean is not used
            self.inner.aggregate_evaluate(
                server_round, [strip_reply(reply, False) for reply, _ in valid]
            )
        except Exception as exc:
            logger.warning("round %d: inner aggregate_evaluate failed: %s", server_round, exc)
        return task_metrics(self.rounds[server_round].evaluate, None)

    def current_task_arrays(self) -> dict[str, ArrayRecord]:
        """The aggregated task-scope arrays of every task."""
        return {task: to_record(arrays) for task, arrays in self.task_arrays.items()}

    # -------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, as a deep copy ready to pickle.

        The inner strategy's state (FedAdam's moments) is :func:`~strategies.state.strategy_state`.
        """
        return copy.deepcopy(
            {
                "inner": strategy_state(self.inner),
                "task-arrays": self.task_arrays,
                **self.nodes.state(),
                "shared-spec": self._expected.shared,
                "rounds": dict(self.rounds),
                "stages": [stage.state() for stage in self.stages],  # e.g. the accountant
            }
        )

    def load_state_dict(self, state: Mapping[str, Any], same_nodes: bool = True) -> None:
        """Restore a :meth:`state_dict` into this (freshly built) strategy.

        With ``same_nodes=False`` (a restarted federation: node ids are per
        connection) the node-to-client map is dropped and asked again.
        """
        state = copy.deepcopy(dict(state))
        load_strategy_state(self.inner, state["inner"])
        self.task_arrays = state["task-arrays"]
        self.nodes.forget()
        if same_nodes:
            self.nodes.restore(state)
        self._expected = replace(self._expected, shared=state["shared-spec"])
        self.rounds = defaultdict(RoundLog, state["rounds"])
        load_stage_states(self.stages, state.get("stages", []))


def evaluate_instructions(
    node_ids: Iterable[int], arrays: ArrayRecord, config: ConfigRecord
) -> list[Message]:
    """One EVALUATE message per node, carrying the shared ``arrays`` and ``config``."""
    return [
        Message(
            RecordDict({ARRAYS: arrays, CONFIG: config}),
            dst_node_id=node,
            message_type=MessageType.EVALUATE,
        )
        for node in node_ids
    ]


def with_task_arrays(message: Message, task_arrays: NDArrays) -> Message:
    """A copy of ``message`` that also carries ``task_arrays`` (``"task-arrays"``).

    A copy per node: the inner strategy shares one RecordDict between messages.
    """
    content = RecordDict(dict(message.content.items()))
    content[TASK_ARRAYS] = to_record(task_arrays)
    return Message(
        content=content,
        dst_node_id=message.metadata.dst_node_id,
        message_type=message.metadata.message_type,
    )


def task_averages(
    valid: list[ValidReply], sent: Mapping[str, NDArrays], rule: TaskRule | None = None
) -> dict[str, NDArrays]:
    """Per task of ``sent``, ``rule`` over the task arrays of exactly the clients holding it.

    A reply's task arrays are split by task (the keys of ``sent[task]``) and
    weighted by that task's own ``num-examples`` (:func:`strategies.task_groups.task_groups`).
    ``rule`` defaults to the weighted mean. Each aggregate is checked against
    what was sent (:func:`checked_task_average`); tasks without replies are left out.
    """
    chosen: TaskRule = rule or MeanRule()
    return {
        task: checked_task_average(
            chosen([u for u, _ in pairs], [w for _, w in pairs], task), sent[task], task
        )
        for task, pairs in task_groups(valid, sent).items()
    }


def task_metrics(rows: list[ClientRow], extra: MetricRecord | None) -> MetricRecord:
    """``extra`` plus each task's client means, worst clients and 10th percentiles."""
    record = MetricRecord(dict(extra) if extra else {})
    for task, stats in summarize_rows(rows).items():
        for name, value in stats.items():
            if name.endswith(("-mean", "-worst", "-p10")) or name == "num-clients":
                record[f"{task}/{name}"] = value
    return record
