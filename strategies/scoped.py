"""Make any Flower strategy multi-task aware.

:class:`ScopedStrategy` wraps an inner Flower ``Strategy``. The inner strategy
sees exactly what a stock strategy expects: replies holding one ArrayRecord
(the **shared** scope, ``"arrays"``) and one MetricRecord (``num-examples``,
``loss``). The wrapper adds what Flower lacks for multi-task learning:

* the **task** scope (``"task-arrays"``) is averaged per task group (weighted by
  ``num-examples``) and each client receives only its own task's copy;
* every reply is **validated before aggregation** (keys, shapes, dtypes, finite
  values, sample count); a bad reply is logged and counted, never averaged in;
* per-client metrics and bytes on the wire are recorded per round in
  :attr:`rounds`, so the server can write honest per-task, per-client results.

Local-scope weights are never seen: clients do not send them.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedmtl.metrics import ClientRow, ReplyIssue, summarize_rows
from fedmtl.records import (
    ARRAYS,
    CLIENT,
    CONFIG,
    METRICS,
    NUM_EXAMPLES,
    QUERY_KEY,
    TASK_ARRAYS,
    ClientInfo,
    NDArrays,
    from_record,
    metric_values,
    record_nbytes,
    to_record,
)
from strategies.aggregation import cast_like, weighted_average
from strategies.round_log import RoundLog
from strategies.state import load_strategy_state, strategy_state

logger = logging.getLogger(__name__)
ArraySpec = dict[str, tuple[tuple[int, ...], str]]


def spec_of(arrays: Mapping[str, Any]) -> ArraySpec:
    """Keys, shapes and dtypes of an ArrayRecord or a dict of numpy arrays."""
    return {k: (tuple(v.shape), str(np.dtype(v.dtype))) for k, v in arrays.items()}


def check_arrays(
    record: Any,
    expected: ArraySpec,
    name: str,
    reference: Mapping[str, np.ndarray] | None = None,
    max_update_ratio: float = float("inf"),
) -> str | None:
    """Return why ``record`` does not match ``expected``, or ``None`` if it does.

    With ``reference`` (what the client received), a record whose distance to
    it exceeds ``max_update_ratio`` times the reference's norm (at least 1) is
    absurd: no local training moves a model that far.
    """
    if not isinstance(record, ArrayRecord):
        return f"'{name}' missing or not an ArrayRecord"
    got = set(record.keys())
    if got != set(expected):
        missing, extra = sorted(set(expected) - got), sorted(got - set(expected))
        return f"'{name}' keys differ (missing {missing[:3]}, unexpected {extra[:3]})"
    moved = size = 0.0
    for key, array in record.items():
        shape, dtype = expected[key]
        if tuple(array.shape) != shape or array.dtype != dtype:
            return (
                f"'{name}' entry '{key}' is {array.dtype}{list(array.shape)}, "
                f"expected {dtype}{list(shape)}"
            )
        values = array.numpy()
        if not np.issubdtype(values.dtype, np.inexact):
            continue  # counters (num_batches_tracked) are not weights
        if not np.all(np.isfinite(values)):
            return f"non-finite values in '{name}' entry '{key}'"
        if reference is not None and key in reference:
            received = reference[key].astype(np.float64)
            moved += float(np.sum((values.astype(np.float64) - received) ** 2))
            size += float(np.sum(received**2))
    limit = max_update_ratio * max(np.sqrt(size), 1.0)
    if np.sqrt(moved) > limit:
        return (
            f"absurd update of '{name}': norm {np.sqrt(moved):.3g} > {max_update_ratio:g} x "
            f"the received norm ({limit:.3g})"
        )
    return None


class NotEnoughNodesError(RuntimeError):
    """Too few nodes stayed connected for longer than the wait deadline."""


class ClientOrderedGrid:
    """A Grid whose ``get_node_ids`` lists nodes in client-id order; all else is the Grid's.

    Parameters
    ----------
    grid : Grid
        The real grid.
    strategy : ScopedStrategy
        Knows (and asks for) each node's client id.
    """

    def __init__(self, grid: Grid, strategy: ScopedStrategy) -> None:
        self._grid = grid
        self._strategy = strategy

    def get_node_ids(self) -> list[int]:
        """Connected node ids, ordered by the client id each reports.

        Raises :class:`NotEnoughNodesError` once fewer nodes than the inner strategy's
        ``min_available_nodes`` have been connected for longer than the
        strategy's ``node_wait_timeout`` (Flower's sampling would wait forever).
        """
        ordered = self._strategy.node_order(list(self._grid.get_node_ids()), self._grid)
        self._strategy.check_enough_nodes(len(ordered))  # held-out nodes do not count
        self._strategy.seed_sampling()  # Flower samples from this list right after
        return ordered

    def client_of(self, node_id: int) -> int | None:
        """The client id ``node_id`` reported (stable across restarts, unlike node ids)."""
        return self._strategy.node_clients.get(node_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


class ScopedStrategy(Strategy):
    """Hand the shared scope to ``inner``; aggregate the task scope per task.

    Parameters
    ----------
    inner : Strategy
        Any Flower message-based strategy; it aggregates ``"arrays"``.
    task_arrays : mapping of str to ArrayRecord, optional
        Initial task-scope arrays for each task (empty when the run has no task scope).
    query_timeout : float
        Seconds to wait when asking new nodes which task they hold.
    max_examples : int
        Replies claiming more examples than this are rejected as absurd.
    evaluate_every : int
        Evaluate in rounds that are multiples of this (and in ``final_round``).
    final_round : int, optional
        The run's last round, always evaluated.
    excluded_clients : iterable of int
        Client ids never sampled (held out as unseen clients; see :meth:`evaluate_nodes`).
    evaluate_panel : iterable of int, optional
        If given, only these clients are evaluated (among those the inner strategy samples).
    node_wait_timeout : float
        Seconds to wait for the inner strategy's ``min_available_nodes`` before
        giving up with :class:`NotEnoughNodesError`.
    sampling_seed : int, optional
        Makes each round's sample a function of (seed, phase, round) only (see Notes).
    max_update_ratio : float
        Train replies whose shared or task arrays moved more than this many times
        the norm of what was sent (at least 1) are rejected as absurd.

    Notes
    -----
    The inner strategy samples from the nodes listed in client-id order (the
    ids the nodes report), not in the order of their node ids, which are random
    per connection: with a seeded ``random``, the same clients are sampled in
    every run of an experiment, and in a resumed run.
    ``round_offset`` (set when resuming) is added to every round number Flower
    passes in, so round ``1`` of a run resumed after round ``R`` is ``R + 1``.

    With ``sampling_seed``, the global ``random`` (which Flower's sampling uses)
    is seeded from (seed, phase, round) just before each sample: who is sampled
    then depends on nothing else. In a deployment, Flower's heartbeat and retry
    jitter draw from the same global ``random`` at times that vary run to run.
    """

    def __init__(
        self,
        inner: Strategy,
        task_arrays: Mapping[str, ArrayRecord] | None = None,
        query_timeout: float = 120.0,
        max_examples: int = 10_000_000,
        evaluate_every: int = 1,
        final_round: int | None = None,
        excluded_clients: Iterable[int] = (),
        evaluate_panel: Iterable[int] | None = None,
        node_wait_timeout: float = 300.0,
        sampling_seed: int | None = None,
        max_update_ratio: float = 1000.0,
    ) -> None:
        self.inner = inner
        self.max_update_ratio = max_update_ratio
        self._shared_sent: NDArrays | None = None  # this round's shared arrays, as sent
        self.sampling_seed = sampling_seed
        self._sampling_key: str | None = None
        self._outbox: list[Message] = []  # the last messages sent, to name failed nodes
        self.node_wait_timeout = node_wait_timeout
        self._waiting_since: float | None = None
        self.evaluate_every = evaluate_every
        self.final_round = final_round
        self.excluded_clients = frozenset(excluded_clients)
        self.evaluate_panel = None if evaluate_panel is None else frozenset(evaluate_panel)
        self.round_offset = 0
        self.task_arrays: dict[str, NDArrays] = {
            task: from_record(record) for task, record in (task_arrays or {}).items()
        }
        self.query_timeout = query_timeout
        self.max_examples = max_examples
        self.node_tasks: dict[int, str] = {}
        self.node_clients: dict[int, int] = {}
        self.rounds: dict[int, RoundLog] = defaultdict(RoundLog)
        self._shared_spec: ArraySpec = {}

    # ------------------------------------------------------------------ config
    def summary(self) -> None:
        """Log the inner strategy's summary and the task groups."""
        logger.info(
            "ScopedStrategy over %s; task scope for %s",
            type(self.inner).__name__,
            sorted(self.task_arrays) or "no task",
        )
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Let the inner strategy sample and configure; add each node's task arrays."""
        server_round += self.round_offset
        self._shared_spec = spec_of(arrays)
        self._shared_sent = from_record(arrays)
        self._sampling_key = f"{self.sampling_seed}:train:{server_round}"
        ordered = cast(Grid, ClientOrderedGrid(grid, self))
        messages = list(self.inner.configure_train(server_round, arrays, config, ordered))
        return self._personalise(server_round, messages, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Same as training: the inner strategy samples, we add task arrays.

        Rounds that are not evaluation rounds (``evaluate_every``) send nothing.
        """
        server_round += self.round_offset
        if not self.evaluates(server_round):
            return []
        self._sampling_key = f"{self.sampling_seed}:evaluate:{server_round}"
        ordered = cast(Grid, ClientOrderedGrid(grid, self))
        messages = list(self.inner.configure_evaluate(server_round, arrays, config, ordered))
        if self.evaluate_panel is not None:
            panel = self.evaluate_panel
            messages = [
                m for m in messages if self.node_clients.get(m.metadata.dst_node_id) in panel
            ]
        return self._personalise(server_round, messages, grid)

    def evaluates(self, server_round: int) -> bool:
        """Whether clients are evaluated after ``server_round`` (0 is the initial model)."""
        return server_round % self.evaluate_every == 0 or server_round == self.final_round

    def seed_sampling(self) -> None:
        """Seed the global ``random`` for the sample about to be drawn (with ``sampling_seed``)."""
        if self.sampling_seed is not None and self._sampling_key is not None:
            random.seed(self._sampling_key)

    def check_enough_nodes(self, connected: int) -> None:
        """Start, reset or end the wait for the inner strategy's minimum number of nodes."""
        needed = int(getattr(self.inner, "min_available_nodes", 1))
        if connected >= needed:
            self._waiting_since = None
            return
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
            logger.warning("waiting for nodes: %d connected, %d needed", connected, needed)
        elif now - self._waiting_since > self.node_wait_timeout:
            raise NotEnoughNodesError(
                f"only {connected} of the {needed} nodes needed were connected for "
                f"{self.node_wait_timeout:.0f} s; start more SuperNodes, or lower "
                "min-available-clients / raise node-wait-timeout-s"
            )

    def node_order(self, node_ids: list[int], grid: Grid) -> list[int]:
        """``node_ids`` sorted by the client id each reports (asked once), excluded ones dropped."""
        self._discover(node_ids, grid)
        kept = [n for n in node_ids if self.node_clients.get(n) not in self.excluded_clients]
        return sorted(kept, key=lambda n: (self.node_clients.get(n, 1 << 62), n))

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
        wanted = set(client_ids)
        self._discover(list(grid.get_node_ids()), grid)
        nodes = sorted(n for n, c in self.node_clients.items() if c in wanted)
        messages = [
            Message(
                RecordDict({ARRAYS: arrays, CONFIG: config}),
                dst_node_id=node,
                message_type=MessageType.EVALUATE,
            )
            for node in nodes
        ]
        log = RoundLog()
        replies = grid.send_and_receive(self._with_task_arrays(messages, log), timeout=timeout)
        self._screen(0, replies, train=False, log=log)
        return log

    def _personalise(self, server_round: int, messages: list[Message], grid: Grid) -> list[Message]:
        self._discover([m.metadata.dst_node_id for m in messages], grid)
        return self._with_task_arrays(messages, self.rounds[server_round])

    def _with_task_arrays(self, messages: list[Message], log: RoundLog) -> list[Message]:
        """Each message gets its node's task arrays (a copy of the content per node)."""
        out = []
        for message in messages:
            content = message.content
            task = self.node_tasks.get(message.metadata.dst_node_id)
            if task in self.task_arrays:
                # A copy per node: the inner strategy shares one RecordDict between messages.
                content = RecordDict(dict(content.items()))
                content[TASK_ARRAYS] = to_record(self.task_arrays[task])
                message = Message(
                    content=content,
                    dst_node_id=message.metadata.dst_node_id,
                    message_type=message.metadata.message_type,
                )
            log.bytes_down += sum(record_nbytes(r) for r in content.array_records.values())
            out.append(message)
        self._outbox = out  # the Grid writes each message's id into it when sending
        return out

    def _discover(self, node_ids: list[int], grid: Grid) -> None:
        """Ask nodes we have not heard from which task they hold."""
        unknown = [n for n in node_ids if n not in self.node_tasks]
        if not unknown:
            return
        query = [
            Message(
                RecordDict({CONFIG: ConfigRecord({QUERY_KEY: "client-info"})}),
                dst_node_id=node,
                message_type=MessageType.QUERY,
            )
            for node in unknown
        ]
        for reply in grid.send_and_receive(query, timeout=self.query_timeout):
            if reply.has_error():
                logger.warning(
                    "node %s did not say its task: %s",
                    reply.metadata.src_node_id,
                    reply.error.reason,
                )
                continue
            self._learn(reply)

    def _learn(self, reply: Message) -> ClientInfo | None:
        try:
            info = ClientInfo.from_content(reply.content)
        except (KeyError, TypeError, ValueError):
            return None
        self.node_tasks[reply.metadata.src_node_id] = info.task
        self.node_clients[reply.metadata.src_node_id] = info.client_id
        return info

    # --------------------------------------------------------------- validation
    def _check_reply(
        self, content: RecordDict, train: bool
    ) -> tuple[ClientInfo | None, str | None]:
        try:
            info = ClientInfo.from_content(content)
        except (KeyError, TypeError, ValueError):
            return None, "no 'client' record with task and client-id"
        metrics = content.metric_records.get(METRICS)
        if metrics is None or NUM_EXAMPLES not in metrics:
            return info, f"no '{NUM_EXAMPLES}' in '{METRICS}'"
        n = metrics[NUM_EXAMPLES]
        if isinstance(n, list) or not np.isfinite(n) or not 0 < n <= self.max_examples:
            return info, f"absurd '{NUM_EXAMPLES}' = {n}"
        if any(not np.isfinite(v) for v in metric_values(content).values()):
            return info, "non-finite metric values"
        if not train:
            return info, None
        reason = check_arrays(
            content.get(ARRAYS),
            self._shared_spec,
            ARRAYS,
            self._shared_sent,
            self.max_update_ratio,
        )
        if reason is None and info.task in self.task_arrays:
            task_arrays = self.task_arrays[info.task]
            reason = check_arrays(
                content.get(TASK_ARRAYS),
                spec_of(task_arrays),
                TASK_ARRAYS,
                task_arrays,
                self.max_update_ratio,
            )
        elif reason is None and TASK_ARRAYS in content:
            reason = f"'{TASK_ARRAYS}' sent but task '{info.task}' has no task scope"
        return info, reason

    def _screen(
        self,
        server_round: int,
        replies: Iterable[Message],
        train: bool,
        log: RoundLog | None = None,
    ) -> list[tuple[Message, ClientInfo]]:
        """Split replies into valid ones and logged failures/rejections (into ``log``)."""
        log = self.rounds[server_round] if log is None else log
        first_rejected, first_failure = len(log.rejected), len(log.failures)
        valid = []
        destinations = {
            m.metadata.message_id: m.metadata.dst_node_id
            for m in self._outbox
            if m.metadata.message_id  # set by the Grid when it sent the message
        }
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                # The SuperLink answers for an unreachable node in its own name.
                node = destinations.get(reply.metadata.reply_to_message_id, node)
                client = self.node_clients.get(node)
                log.failures.append(ReplyIssue(node, client, str(reply.error.reason)))
                logger.warning(
                    "round %d: client %s (node %s) failed: %s",
                    server_round,
                    client,
                    node,
                    reply.error.reason,
                )
                continue
            if train:
                log.bytes_up += sum(record_nbytes(r) for r in reply.content.array_records.values())
            info, reason = self._check_reply(reply.content, train)
            if reason is not None or info is None:
                client = info.client_id if info else self.node_clients.get(node)
                log.rejected.append(ReplyIssue(node, client, reason or "invalid reply"))
                logger.warning(
                    "round %d: rejected reply of client %s: %s", server_round, client, reason
                )
                continue
            self.node_tasks[node] = info.task
            self.node_clients[node] = info.client_id
            valid.append((reply, info))
        valid.sort(key=lambda pair: pair[1].client_id)  # order-independent float sums
        # Replies arrive in any order; the log lists them by client, reproducibly.
        log.rejected[first_rejected:] = sorted(
            log.rejected[first_rejected:], key=ReplyIssue.sort_key
        )
        log.failures[first_failure:] = sorted(log.failures[first_failure:], key=ReplyIssue.sort_key)
        rows = log.train if train else log.evaluate
        for reply, info in valid:
            rows.append(ClientRow(info.client_id, info.task, metric_values(reply.content)))
        return valid

    @staticmethod
    def _strip(reply: Message, train: bool) -> Message:
        """The reply as a stock strategy expects it: one ArrayRecord, one MetricRecord.

        The client's identity (``"client"`` ConfigRecord: client id and task) stays,
        so task-aware strategies can group replies; Flower's strategies ignore it.
        """
        metrics = reply.content.metric_records[METRICS]
        common = MetricRecord(
            {NUM_EXAMPLES: metrics[NUM_EXAMPLES], "loss": metrics.get("loss", 0.0)}
        )
        content = RecordDict({METRICS: common, CLIENT: reply.content.config_records[CLIENT]})
        if train:
            content[ARRAYS] = reply.content.array_records[ARRAYS]
        return Message(content=content, metadata=reply.metadata)  # type: ignore[call-overload,no-any-return]

    # -------------------------------------------------------------- aggregation
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate, aggregate the shared scope (inner) and the task scope (per task)."""
        server_round += self.round_offset
        valid = self._screen(server_round, replies, train=True)
        if not valid:
            self.rounds[server_round].skipped = True
            logger.warning("round %d: no valid training reply; round skipped", server_round)
            return None, None
        try:
            arrays, metrics = self.inner.aggregate_train(
                server_round, [self._strip(reply, True) for reply, _ in valid]
            )
        except Exception as exc:  # a strategy failure costs the round, not the run
            logger.error(
                "round %d: %s failed to aggregate: %s", server_round, type(self.inner).__name__, exc
            )
            self.rounds[server_round].skipped = True
            return None, None
        if arrays is not None:
            arrays = to_record(
                {
                    k: cast_like(v, np.dtype(self._shared_spec[k][1]))
                    if k in self._shared_spec
                    else v
                    for k, v in from_record(arrays).items()
                }
            )
        self._aggregate_tasks(valid)
        return arrays, self._task_metrics(self.rounds[server_round].train, metrics)

    def _aggregate_tasks(self, valid: list[tuple[Message, ClientInfo]]) -> None:
        groups: dict[str, list[tuple[NDArrays, float]]] = defaultdict(list)
        for reply, info in valid:
            if info.task in self.task_arrays:
                weight = float(reply.content.metric_records[METRICS][NUM_EXAMPLES])  # type: ignore[arg-type]
                groups[info.task].append(
                    (from_record(reply.content.array_records[TASK_ARRAYS]), weight)
                )
        for task, pairs in groups.items():
            self.task_arrays[task] = weighted_average([u for u, _ in pairs], [w for _, w in pairs])

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Record every client's metrics; return per-task means and worst clients."""
        server_round += self.round_offset
        valid = self._screen(server_round, replies, train=False)
        if not valid:
            return None
        try:  # keep stateful inner strategies informed; their cross-task mean is not used
            self.inner.aggregate_evaluate(
                server_round, [self._strip(reply, False) for reply, _ in valid]
            )
        except Exception as exc:
            logger.warning("round %d: inner aggregate_evaluate failed: %s", server_round, exc)
        return self._task_metrics(self.rounds[server_round].evaluate, None)

    @staticmethod
    def _task_metrics(rows: list[ClientRow], extra: MetricRecord | None) -> MetricRecord:
        record = MetricRecord(dict(extra) if extra else {})
        for task, stats in summarize_rows(rows).items():
            for name, value in stats.items():
                if name.endswith(("-mean", "-worst", "-p10")) or name == "num-clients":
                    record[f"{task}/{name}"] = value
        return record

    def current_task_arrays(self) -> dict[str, ArrayRecord]:
        """The aggregated task-scope arrays of every task."""
        return {task: to_record(arrays) for task, arrays in self.task_arrays.items()}

    # -------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, as a deep copy ready to pickle.

        The inner strategy's state (FedAdam's moments, FedAvgM's momentum) is
        captured by :func:`strategies.state.strategy_state`: its own
        ``state_dict()`` if it defines one, else its non-callable attributes.
        """
        return copy.deepcopy(
            {
                "inner": strategy_state(self.inner),
                "task-arrays": self.task_arrays,
                "node-tasks": self.node_tasks,
                "node-clients": self.node_clients,
                "shared-spec": self._shared_spec,
                "rounds": dict(self.rounds),
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
        self.node_tasks = state["node-tasks"] if same_nodes else {}
        self.node_clients = state["node-clients"] if same_nodes else {}
        self._shared_spec = state["shared-spec"]
        self.rounds = defaultdict(RoundLog, state["rounds"])
