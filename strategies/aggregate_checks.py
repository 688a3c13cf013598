"""Check an aggregate before it is broadcast: the inner strategy's, and each task average.

Clients validate nothing they receive, so a strategy that returns wrong keys,
wrong shapes or NaN would wreck every client's model and the clients would get
the blame. The wrapper runs these checks first; an aggregate that fails raises
:class:`InvalidAggregateError`, and the round keeps the previous weights.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, MetricRecord

from fedmtl.records import ARRAYS, TASK_ARRAYS, NDArrays, from_record, to_record
from strategies.aggregation import cast_like
from strategies.replies import ArraySpec, check_arrays, spec_of


class InvalidAggregateError(ValueError):
    """An aggregate that must not be broadcast; the message says what is wrong."""


def checked_shared(arrays: Any, spec: ArraySpec, strategy: str) -> ArrayRecord:
    """``arrays`` (the inner strategy's result) cast to the dtypes sent, once checked.

    It must be an ArrayRecord with exactly the keys and shapes of ``spec`` (what
    was sent) and finite values, before and after the cast to the sent dtypes
    (a NaN rounded to an integer, or a float64 overflowing float32, is not).

    Raises
    ------
    InvalidAggregateError
        Naming ``strategy`` and what is wrong.
    """
    if not isinstance(arrays, ArrayRecord):
        got = "no arrays" if arrays is None else f"a {type(arrays).__name__}, not an ArrayRecord"
        raise InvalidAggregateError(f"{strategy} returned {got}")
    try:
        values = from_record(arrays)
    except Exception as exc:  # an Array whose bytes are not a numpy array
        raise InvalidAggregateError(f"{strategy} returned unreadable arrays: {exc}") from exc
    reason = _non_finite(values, ARRAYS)
    if reason is None:
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below
            sendable = to_record(
                {
                    k: cast_like(v, np.dtype(spec[k][1])) if k in spec else v
                    for k, v in values.items()
                }
            )
        reason = check_arrays(sendable, spec, ARRAYS)
        if reason is None:
            return sendable
    raise InvalidAggregateError(f"{strategy} returned {reason}")


def checked_task_average(average: NDArrays, sent: NDArrays, task: str) -> NDArrays:
    """``average`` (of task ``task``) if it has the keys, shapes and dtypes of ``sent``, finite.

    Raises
    ------
    InvalidAggregateError
        Naming the task and what is wrong.
    """
    reason = check_arrays(to_record(average), spec_of(sent), TASK_ARRAYS)
    if reason is not None:
        raise InvalidAggregateError(f"average of task '{task}': {reason}")
    return average


def finite_scalars(metrics: MetricRecord | None) -> dict[str, float]:
    """The finite int and float entries of ``metrics`` (lists and NaN/inf dropped)."""
    if metrics is None:
        return {}
    return {
        k: v
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def _non_finite(values: NDArrays, name: str) -> str | None:
    for key, value in values.items():
        if np.issubdtype(value.dtype, np.inexact) and not np.all(np.isfinite(value)):
            return f"non-finite values in '{name}' entry '{key}'"
    return None
