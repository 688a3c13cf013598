"""Markdown tables of per-task statistics (the round tables of the output and ``report.md``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fedmtl.results.series import PRIMARY_METRICS, metric_names

_MISSING = "-"


def _number(value: object) -> float:
    """A JSON number as float; anything else (missing, text, booleans) is ``nan``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _fmt(value: object) -> str:
    """Three decimals; missing or not a number -> ``-``."""
    number = _number(value)
    return _MISSING if math.isnan(number) else f"{number:.3f}"


def _fmt_count(value: object) -> str:
    """An integer count; missing or not finite -> ``-``."""
    number = _number(value)
    return _MISSING if not math.isfinite(number) else str(int(number))


def format_task_table(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    """Render one phase's per-task statistics as a markdown table.

    Parameters
    ----------
    tasks : mapping of str to mapping
        Per-task statistics, e.g. ``record.evaluate.tasks`` of a
        :class:`~fedmtl.results.RoundRecord`.

    Returns
    -------
    str
        Markdown table with columns ``task | clients | accuracy mean |
        accuracy std | worst client | 10th percentile | loss mean`` followed by one
        ``<metric> mean`` column per other metric present (alphabetical).
        "worst client" is ``accuracy-worst``, "10th percentile" ``accuracy-p10``.
        Rows are sorted by task name; numbers have three decimals and missing
        values are ``-``. No tasks give the header only. No trailing newline.
    """
    extra = [m for m in metric_names([tasks]) if m not in PRIMARY_METRICS]
    header = [
        "task",
        "clients",
        "accuracy mean",
        "accuracy std",
        "worst client",
        "10th percentile",
        "loss mean",
        *(f"{m} mean" for m in extra),
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for task in sorted(tasks):
        stats = tasks[task]
        cells = [
            task.replace("|", "\\|"),
            _fmt_count(stats.get("num-clients")),
            _fmt(stats.get("accuracy-mean")),
            _fmt(stats.get("accuracy-std")),
            _fmt(stats.get("accuracy-worst")),
            _fmt(stats.get("accuracy-p10")),
            _fmt(stats.get("loss-mean")),
            *(_fmt(stats.get(f"{m}-mean")) for m in extra),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
