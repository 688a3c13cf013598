"""Task-balanced FedAvg: every task counts equally in the shared average.

Plain FedAvg weights each reply by its sample count, so a task held by many
clients, or by clients with much data, pulls the shared backbone towards itself
and starves the others. Here the weight of client ``i`` holding task ``t`` is

    w_i = n_i / N_t / T,

where ``n_i`` is its ``num-examples``, ``N_t`` the examples of all valid replies
of task ``t`` this round and ``T`` the number of tasks among them: within a task
clients are weighted by data (as FedAvg), across tasks each task gets ``1 / T``.
This is the static task weighting used as the baseline of multi-task federated
learning work (e.g. FedHCA2, Lu et al., CVPR 2024; MaT-FL, Cai et al., 2023).

A client holding ``k`` tasks counts in each of its ``k`` task groups with its
examples split equally, ``n_i / k``: its weight is the sum over its tasks of
``(n_i / k) / N_t / T``, with ``N_t`` summing those shares. The weights still
sum to 1 and each task keeps its ``1 / T`` share. (The equal split, not the
tasks' own counts: a stock strategy's reply carries only the total
``num-examples``.) A client holding one task is weighted exactly as before.

Wire keys: reads the shared ``"arrays"``, ``"metrics"`` (``num-examples``,
``loss``) and the ``"client"`` ConfigRecord (``task``, ``tasks``) that
``ScopedStrategy`` keeps in each reply; sends what FedAvg sends. Client side: nothing beyond plain
training. The train metrics it reports are averaged with the same task-balanced
weights.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedmtl.records import METRICS, NUM_EXAMPLES, ClientInfo, reply_examples
from strategies.registry import register


def task_balanced_weights(
    tasks: Sequence[str | Sequence[str]], num_examples: Sequence[float]
) -> list[float]:
    """Weights ``n_i / N_t / T`` (they sum to 1; each task's share is ``1 / T``).

    ``tasks[i]`` is client ``i``'s task, or the tuple of the tasks it holds: it
    then counts in each with ``n_i / k`` examples (see the module docstring).
    """
    held = [(t,) if isinstance(t, str) else tuple(t) for t in tasks]
    if any(not h for h in held):
        raise ValueError("every client holds at least one task")
    shares = [n / len(h) for h, n in zip(held, num_examples, strict=True)]
    totals: dict[str, float] = defaultdict(float)
    for h, share in zip(held, shares, strict=True):
        for task in h:
            totals[task] += share
    present = [t for t, total in totals.items() if total > 0]
    if not present:
        return [0.0 for _ in held]
    return [
        sum(share / totals[t] / len(present) if totals[t] > 0 else 0.0 for t in h)
        for h, share in zip(held, shares, strict=True)
    ]


@register("task-balanced")
class TaskBalancedFedAvg(FedAvg):
    """FedAvg on the shared scope with each task weighted equally (see module docstring)."""

    conformance_traits = ("weighted-mean", "task-aware")

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Re-weight the valid replies per task, then average them as FedAvg does."""
        replies = list(replies)
        valid = [r for r in replies if not r.has_error()]
        tasks = [ClientInfo.from_content(r.content).tasks for r in valid]
        counts = [reply_examples(r.content) for r in valid]
        weights = task_balanced_weights(tasks, counts)
        reweighted = [_with_weight(r, w) for r, w in zip(valid, weights, strict=True)]
        errors = [r for r in replies if r.has_error()]
        return super().aggregate_train(server_round, reweighted + errors)


def _with_weight(reply: Message, weight: float) -> Message:
    content = RecordDict(dict(reply.content.items()))
    metrics = MetricRecord(dict(reply.content.metric_records[METRICS].items()))
    metrics[NUM_EXAMPLES] = weight
    content[METRICS] = metrics
    return Message(content=content, metadata=reply.metadata)  # type: ignore[call-overload,no-any-return]
