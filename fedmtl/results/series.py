"""Per-round series drawn from typed round records: metric curves per task, bytes per round.

Whatever a record lacks is a gap (``nan``), never a zero. If a round appears
more than once, the later record wins (a resumed run redoes its last rounds).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedmtl.results.round_record import Phase, RoundRecord

FloatArray = npt.NDArray[np.float64]

#: The metrics every task reports, listed (and plotted) first.
PRIMARY_METRICS = ("accuracy", "loss")
_MEAN_SUFFIX = "-mean"
_BYTES_PER_MB = 1e6


@dataclass(frozen=True)
class MetricSeries:
    """Per-round values of one metric for one task.

    Attributes
    ----------
    rounds : numpy.ndarray
        Round numbers, ascending.
    mean : numpy.ndarray
        ``<metric>-mean`` for each round (``nan`` where missing).
    worst : numpy.ndarray
        ``<metric>-worst`` for each round (``nan`` where missing).
    """

    rounds: FloatArray
    mean: FloatArray
    worst: FloatArray


def _value(stats: Mapping[str, float], key: str) -> float:
    value = stats.get(key)
    return math.nan if value is None else float(value)


def by_round(records: Sequence[RoundRecord]) -> list[RoundRecord]:
    """The records sorted by round, the later record winning when a round repeats."""
    latest = {record.round: record for record in records}
    return [latest[number] for number in sorted(latest)]


def metric_names(task_stats: Iterable[Mapping[str, Mapping[str, float]]]) -> list[str]:
    """The metrics with an ``<m>-mean`` entry in any task: accuracy and loss first, then a-z."""
    found = {
        key[: -len(_MEAN_SUFFIX)]
        for tasks in task_stats
        for stats in tasks.values()
        for key in stats
        if key.endswith(_MEAN_SUFFIX) and key != _MEAN_SUFFIX
    }
    primary = [name for name in PRIMARY_METRICS if name in found]
    return primary + sorted(found.difference(PRIMARY_METRICS))


def discover_metrics(records: Sequence[RoundRecord], phase: Phase = "evaluate") -> list[str]:
    """List the task metrics reported in a phase (see :func:`metric_names`)."""
    return metric_names(record.phase(phase).tasks for record in records)


def metric_series(
    records: Sequence[RoundRecord], metric: str, phase: Phase = "evaluate"
) -> dict[str, MetricSeries]:
    """Collect ``<metric>-mean`` and ``<metric>-worst`` per task over rounds.

    Parameters
    ----------
    records : sequence of RoundRecord
        Per-round records.
    metric : str
        Metric name without suffix, e.g. ``"accuracy"``.
    phase : {"evaluate", "train"}
        Phase to read.

    Returns
    -------
    dict of str to MetricSeries
        One entry per task that reports ``<metric>-mean`` in at least one
        round, sorted by task name. Each series spans the rounds that have
        the task in ``phase``; missing values are ``nan``.
    """
    mean_key, worst_key = f"{metric}-mean", f"{metric}-worst"
    points: dict[str, list[tuple[int, float, float]]] = {}
    for record in by_round(records):
        for task, stats in record.phase(phase).tasks.items():
            points.setdefault(task, []).append(
                (record.round, _value(stats, mean_key), _value(stats, worst_key))
            )
    series: dict[str, MetricSeries] = {}
    for task in sorted(points):
        rows = points[task]
        if all(math.isnan(mean) for _, mean, _ in rows):
            continue
        series[task] = MetricSeries(
            rounds=np.array([row[0] for row in rows], dtype=np.float64),
            mean=np.array([row[1] for row in rows], dtype=np.float64),
            worst=np.array([row[2] for row in rows], dtype=np.float64),
        )
    return series


def bytes_series(records: Sequence[RoundRecord]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Communication volume per round, in megabytes (10**6 bytes).

    Returns
    -------
    rounds, up_mb, down_mb : numpy.ndarray
        Round numbers (ascending) and the bytes up / down divided by 10**6
        (``nan`` where missing).
    """
    ordered = by_round(records)

    def megabytes(values: list[int | None]) -> FloatArray:
        array = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        return array / _BYTES_PER_MB

    rounds = np.array([r.round for r in ordered], dtype=np.float64)
    return (
        rounds,
        megabytes([r.bytes_up for r in ordered]),
        megabytes([r.bytes_down for r in ordered]),
    )
