"""Pure checks of client replies: why a reply must not be aggregated, or ``None``.

Every function here depends on its inputs only. A reply is checked for its
identity (``"client"``: tasks of the run only), a plausible ``num-examples``
(and, for a client holding several tasks, each task's own), finite metrics and,
for a train reply, arrays with exactly the keys, shapes and dtypes that were
sent, finite, and not absurdly far from what was sent (:class:`Expected` says
what was sent). A client holding several tasks must reply with the merged
task-scope arrays of every task it holds that has a task scope
(:func:`strategies.task_groups.merged_task_arrays`), and its gradient cosines
(``grad-cosine/<a>/<b>``) must be in [-1, 1] and name two different tasks it holds.
:mod:`strategies.screening` applies the checks to a round's replies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from fedmtl.records import (
    ARRAYS,
    CLIENT,
    METRICS,
    NUM_EXAMPLES,
    TASK_ARRAYS,
    ClientInfo,
    NDArrays,
    gradient_cosines,
    metric_values,
    task_metric,
)
from strategies.task_groups import merged_task_arrays, scoped_tasks

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


@dataclass(frozen=True)
class Expected:
    """What a valid reply holds in one round.

    Attributes
    ----------
    max_examples : int
        Replies claiming more examples than this (or none) are absurd.
    shared : ArraySpec
        Keys, shapes and dtypes of the shared arrays sent (train replies).
    sent : mapping of str to ndarray, optional
        The shared arrays as sent; with it, absurd updates are rejected.
    tasks : mapping of str to named arrays
        Each task's task-scope arrays as sent; a task not listed has no task scope.
    max_update_ratio : float
        How far (times the norm of what was sent, at least 1) an update may move.
    run_tasks : frozenset of str
        Every task of the run; a reply naming another is rejected (empty: not checked).
    """

    max_examples: int = 10_000_000
    shared: ArraySpec = field(default_factory=dict)
    sent: NDArrays | None = None
    tasks: Mapping[str, NDArrays] = field(default_factory=dict)
    max_update_ratio: float = float("inf")
    run_tasks: frozenset[str] = frozenset()


def check_reply(
    content: RecordDict, expected: Expected, train: bool
) -> tuple[ClientInfo | None, str | None]:
    """Who replied (if readable), and why the reply is invalid (``None``: valid).

    Evaluate replies (``train=False``) are checked for identity and metrics only.
    """
    try:
        info = ClientInfo.from_content(content)
    except (KeyError, TypeError, ValueError):
        return None, "no 'client' record with task and client-id"
    reason = _identity_problem(info, expected) or _metrics_problem(content, info, expected)
    if reason is not None or not train:
        return info, reason
    ratio = expected.max_update_ratio
    reason = check_arrays(content.get(ARRAYS), expected.shared, ARRAYS, expected.sent, ratio)
    scoped = scoped_tasks(info.tasks, expected.tasks)
    if reason is None and scoped:
        try:
            task_arrays = merged_task_arrays(expected.tasks, scoped)
        except ValueError as exc:
            return info, str(exc)
        reason = check_arrays(
            content.get(TASK_ARRAYS), spec_of(task_arrays), TASK_ARRAYS, task_arrays, ratio
        )
    elif reason is None and TASK_ARRAYS in content:
        held = (
            f"task '{info.task}' has" if len(info.tasks) == 1 else f"tasks {list(info.tasks)} have"
        )
        reason = f"'{TASK_ARRAYS}' sent but {held} no task scope"
    return info, reason


def _identity_problem(info: ClientInfo, expected: Expected) -> str | None:
    """Why the tasks a reply names are not the run's (``None``: they are, or not checked)."""
    if not expected.run_tasks:
        return None
    unknown = [task for task in info.tasks if task not in expected.run_tasks]
    if unknown:
        return f"unknown tasks {unknown} (the run's tasks: {sorted(expected.run_tasks)})"
    return None


def _metrics_problem(content: RecordDict, info: ClientInfo, expected: Expected) -> str | None:
    """Why the reply's metrics are unusable: counts absent or absurd, values not finite."""
    metrics = content.metric_records.get(METRICS)
    if metrics is None or NUM_EXAMPLES not in metrics:
        return f"no '{NUM_EXAMPLES}' in '{METRICS}'"
    n = metrics[NUM_EXAMPLES]
    if isinstance(n, list) or not np.isfinite(n) or not 0 < n <= expected.max_examples:
        return f"absurd '{NUM_EXAMPLES}' = {n}"
    values = metric_values(content)
    if any(not np.isfinite(v) for v in values.values()):
        return "non-finite metric values"
    if len(info.tasks) == 1:
        return None
    for task in info.tasks:
        key = task_metric(task, NUM_EXAMPLES)
        if key not in values:
            return f"no '{key}' in '{METRICS}' (the client holds {list(info.tasks)})"
        if not 0 < values[key] <= expected.max_examples:
            return f"absurd '{key}' = {values[key]}"
    for (a, b), cosine in gradient_cosines(values).items():
        if a == b or not {a, b} <= set(info.tasks) or not -1.0 <= cosine <= 1.0:
            return f"absurd gradient cosine of tasks '{a}' and '{b}' = {cosine}"
    return None


def strip_reply(reply: Message, train: bool) -> Message:
    """The reply as a stock strategy expects it: one ArrayRecord, one MetricRecord.

    The client's identity (``"client"`` ConfigRecord: client id and task) stays,
    so task-aware strategies can group replies; Flower's strategies ignore it.
    """
    metrics = reply.content.metric_records[METRICS]
    common = MetricRecord({NUM_EXAMPLES: metrics[NUM_EXAMPLES], "loss": metrics.get("loss", 0.0)})
    content = RecordDict({METRICS: common, CLIENT: reply.content.config_records[CLIENT]})
    if train:
        content[ARRAYS] = reply.content.array_records[ARRAYS]
    return Message(content=content, metadata=reply.metadata)  # type: ignore[call-overload,no-any-return]
