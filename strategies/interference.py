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

:class:`~strategies.scoped.ScopedStrategy` calls :func:`reply_task_similarity`
after screening, into :attr:`strategies.round_log.RoundLog.task_similarity`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from fedmtl.records import ARRAYS, NDArrays, from_record, reply_examples
from strategies.screening import ValidReply

__all__ = ["nested_pairs", "reply_task_similarity", "task_update_cosines"]

#: One reply: its shared arrays and its weight (``num-examples``).
WeightedArrays = tuple[NDArrays, float]


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


def nested_pairs(pairs: Mapping[tuple[str, str], float]) -> dict[str, dict[str, float]]:
    """``{(a, b): x}`` as ``{a: {b: x}}`` (the JSON form of ``metrics.jsonl``)."""
    out: dict[str, dict[str, float]] = {}
    for (a, b), value in sorted(pairs.items()):
        out.setdefault(a, {})[b] = value
    return out


def reply_task_similarity(
    valid: Sequence[ValidReply], sent: NDArrays | None
) -> dict[str, dict[str, float]]:
    """:func:`task_update_cosines` of a round's valid train replies, nested by task.

    ``sent`` is the shared arrays sent this round (``None``: unknown, nothing is
    reported); replies are grouped by their client's task.
    """
    if sent is None:
        return {}
    groups: dict[str, list[WeightedArrays]] = defaultdict(list)
    for reply, info in valid:
        record = reply.content.array_records.get(ARRAYS)
        if record is not None:
            groups[info.task].append((from_record(record), reply_examples(reply.content)))
    if len(groups) < 2:
        return {}
    return nested_pairs(task_update_cosines(sent, groups))
