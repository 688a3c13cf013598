"""Which tasks pull the shared layers the same way: cosines of task groups' mean updates.

Per training round, each task group's **mean update** of the shared scope is
the ``num-examples``-weighted mean, over the group's valid replies, of (reply
shared arrays - the shared arrays sent), flattened over every floating-point
entry (integer entries such as BatchNorm's ``num_batches_tracked`` are left
out). Weighting by examples makes it the direction that group contributes to a
FedAvg aggregate. For every pair of tasks the cosine of their mean updates is
reported: 1 the same direction, 0 orthogonal, -1 opposite.

A pair is **not reported** when either mean update is zero (nothing to compare
a direction with) or the cosine is not finite; a round with fewer than two
task groups reports nothing. The computation never raises on such updates.

A client holding several tasks belongs to the group of **each** of its tasks,
weighted there by that task's own ``num-examples``
(:func:`fedmtl.records.task_examples`): its one shared update is what it
contributed to each task. Such clients pull their tasks' cosines towards 1;
the client-side numbers below separate the tasks on one client.

**Client-side** similarity: a client holding several tasks reports, per pair
of its tasks, the mean cosine between the two tasks' gradients on its shared
parameters over the round (``grad-cosine/<a>/<b>`` train metrics,
:func:`fedmtl.records.gradient_cosines`). :func:`client_task_similarity`
averages each pair over the valid replies reporting it (every client counts
once) and counts those clients.

:class:`~strategies.scoped.ScopedStrategy` calls :func:`record_similarity`
after screening: the server-side cosines go to
:attr:`strategies.round_log.RoundLog.task_similarity`, the client-side ones to
``client_task_similarity`` and ``client_task_similarity_clients``, all in the
same ``{task_a: {task_b: value}}`` shape (``task_a < task_b``, no diagonal).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from fedmtl.records import (
    ARRAYS,
    NDArrays,
    from_record,
    gradient_cosines,
    metric_values,
    task_examples,
)
from strategies.round_log import RoundLog
from strategies.screening import ValidReply

__all__ = [
    "client_task_similarity",
    "nested_pairs",
    "record_similarity",
    "reply_task_similarity",
    "task_update_cosines",
]

#: One reply: its shared arrays and its weight (``num-examples``).
WeightedArrays = tuple[NDArrays, float]
Number = TypeVar("Number", int, float)


def _float_keys(sent: NDArrays) -> list[str]:
    return sorted(k for k, v in sent.items() if np.issubdtype(np.asarray(v).dtype, np.floating))


def _mean_update(
    sent: NDArrays, keys: Sequence[str], replies: Sequence[WeightedArrays]
) -> npt.NDArray[np.float64] | None:
    """The weighted mean of the replies' flattened updates; ``None`` without weight."""
    total = sum(max(float(w), 0.0) for _, w in replies)
    if not replies or not math.isfinite(total) or total <= 0:
        return None
    base = np.concatenate([np.asarray(sent[k], np.float64).ravel() for k in keys] or [np.zeros(0)])
    mean = np.zeros_like(base)
    for arrays, weight in replies:
        flat = np.concatenate(
            [np.asarray(arrays[k], np.float64).ravel() for k in keys] or [np.zeros(0)]
        )
        mean += (max(float(weight), 0.0) / total) * (flat - base)
    return mean


def task_update_cosines(
    sent: NDArrays, replies_by_task: Mapping[str, Sequence[WeightedArrays]]
) -> dict[tuple[str, str], float]:
    """The cosine of every pair of task groups' mean shared-scope updates.

    Parameters
    ----------
    sent : mapping of str to ndarray
        The shared arrays sent this round.
    replies_by_task : mapping of str to sequence of (arrays, weight)
        Each task group's valid replies: shared arrays (the keys of ``sent``)
        and ``num-examples`` (negative weights count as 0).

    Returns
    -------
    dict of (str, str) to float
        ``(task_a, task_b)`` with ``task_a < task_b`` to the cosine, in [-1, 1].
        Pairs with a zero (or weightless) mean update, or a non-finite cosine,
        are left out; fewer than two tasks give ``{}``.

    Raises
    ------
    KeyError
        When a reply lacks a floating-point key of ``sent`` (screened replies never do).
    ValueError
        When a reply's array has another size than the one sent.
    """
    keys = _float_keys(sent)
    means: dict[str, npt.NDArray[np.float64]] = {}
    for task in sorted(replies_by_task):
        mean = _mean_update(sent, keys, replies_by_task[task])
        if mean is None or not np.all(np.isfinite(mean)):
            continue
        norm = float(np.linalg.norm(mean))
        if norm > 0 and math.isfinite(norm):
            means[task] = mean / norm
    tasks = sorted(means)
    out: dict[tuple[str, str], float] = {}
    for i, a in enumerate(tasks):
        for b in tasks[i + 1 :]:
            cosine = float(np.dot(means[a], means[b]))
            if math.isfinite(cosine):
                out[(a, b)] = min(1.0, max(-1.0, cosine))
    return out


def nested_pairs(pairs: Mapping[tuple[str, str], Number]) -> dict[str, dict[str, Number]]:
    """``{(a, b): x}`` as ``{a: {b: x}}`` (the JSON form of ``metrics.jsonl``)."""
    out: dict[str, dict[str, Number]] = {}
    for (a, b), value in sorted(pairs.items()):
        out.setdefault(a, {})[b] = value
    return out


def reply_task_similarity(
    valid: Sequence[ValidReply], sent: NDArrays | None
) -> dict[str, dict[str, float]]:
    """:func:`task_update_cosines` of a round's valid train replies, nested by task.

    ``sent`` is the shared arrays sent this round (``None``: unknown, nothing is
    reported); a reply joins the group of every task its client holds, weighted
    by that task's ``num-examples`` (a one-task reply: its ``num-examples``).
    """
    if sent is None:
        return {}
    groups: dict[str, list[WeightedArrays]] = defaultdict(list)
    for reply, info in valid:
        record = reply.content.array_records.get(ARRAYS)
        if record is not None:
            arrays = from_record(record)
            for task in info.tasks:
                groups[task].append((arrays, task_examples(reply.content, task)))
    if len(groups) < 2:
        return {}
    return nested_pairs(task_update_cosines(sent, groups))


def client_task_similarity(
    valid: Sequence[ValidReply],
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    """Each task pair's mean client-side gradient cosine, and how many clients reported it.

    Returns ``({a: {b: mean}}, {a: {b: clients}})`` with ``a < b``, over the
    valid train replies' ``grad-cosine/<a>/<b>`` metrics (screened replies hold
    finite cosines in [-1, 1]); pairs no client reported are left out.
    """
    sums: dict[tuple[str, str], float] = defaultdict(float)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for reply, _ in valid:
        for pair, cosine in gradient_cosines(metric_values(reply.content)).items():
            key = (min(pair), max(pair))
            sums[key] += cosine
            counts[key] += 1
    means = {pair: min(1.0, max(-1.0, total / counts[pair])) for pair, total in sums.items()}
    return nested_pairs(means), nested_pairs(dict(counts))


def record_similarity(log: RoundLog, valid: Sequence[ValidReply], sent: NDArrays | None) -> None:
    """Write a round's server-side and client-side task similarities into ``log``."""
    log.task_similarity = reply_task_similarity(valid, sent)
    log.client_task_similarity, log.client_task_similarity_clients = client_task_similarity(valid)
