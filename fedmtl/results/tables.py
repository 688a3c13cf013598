"""Markdown tables of per-task statistics and client rows (the output's and ``report.md``'s)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fedmtl.metrics import count_clients, primary_metric
from fedmtl.results.round_record import PhaseRecord
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
        Markdown table with columns ``task | clients | <m> mean | <m> std |
        worst client | 10th percentile | loss mean`` followed by one
        ``<metric> mean`` column per other metric present (alphabetical), where
        ``<m>`` is the tasks' primary metric (:func:`fedmtl.metrics.primary_metric`:
        ``accuracy``, a regression's ``mae``). When the tasks' primary metrics
        differ, a ``metric`` column after ``clients`` names each row's and the
        four columns read ``mean | std | worst client | 10th percentile``.
        "worst client" is ``<m>-worst`` (the lowest accuracy, the highest
        error), "10th percentile" ``<m>-p10``. Rows are sorted by task name;
        numbers have three decimals and missing values are ``-``. No tasks give
        the header only (accuracy). No trailing newline.
    """
    primaries = {task: primary_metric(stats) for task, stats in tasks.items()}
    used = sorted(set(primaries.values())) or [primary_metric({})]
    mixed = len(used) > 1
    extra = [m for m in metric_names([tasks]) if m not in PRIMARY_METRICS and m not in used]
    lead = ["metric", "mean", "std"] if mixed else [f"{used[0]} mean", f"{used[0]} std"]
    header = [
        "task",
        "clients",
        *lead,
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
        stats, metric = tasks[task], primaries[task]
        cells = [
            task.replace("|", "\\|"),
            _fmt_count(stats.get("num-clients")),
            *([metric] if mixed else []),
            _fmt(stats.get(f"{metric}-mean")),
            _fmt(stats.get(f"{metric}-std")),
            _fmt(stats.get(f"{metric}-worst")),
            _fmt(stats.get(f"{metric}-p10")),
            _fmt(stats.get("loss-mean")),
            *(_fmt(stats.get(f"{m}-mean")) for m in extra),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def holds_several_tasks(phase: PhaseRecord) -> bool:
    """Whether some client of ``phase`` has rows of two or more tasks."""
    seen: set[int] = set()
    for row in phase.clients:
        if row.client_id in seen:
            return True
        seen.add(row.client_id)
    return False


def format_client_table(phase: PhaseRecord) -> str:
    """Render a phase's client rows as a markdown table: one line per client per task.

    Columns ``client | task | metric | value | loss | examples``: the row's
    task's primary metric (:func:`fedmtl.metrics.primary_metric` of the task's
    statistics: ``accuracy``, a regression's ``mae``) and its value, the row's
    loss and its examples. Lines are sorted by client id, then task. A first
    line counts the distinct clients and their rows. No trailing newline.
    """
    rows = sorted(phase.clients, key=lambda r: r.key)
    clients = count_clients(row.to_json() for row in rows)
    lines = [
        f"{clients} client{'s' if clients != 1 else ''}, {len(rows)} client-task "
        f"row{'s' if len(rows) != 1 else ''}:",
        "",
        "| client | task | metric | value | loss | examples |",
        "|---:|:---|:---|---:|---:|---:|",
    ]
    for row in rows:
        metric = primary_metric(phase.tasks.get(row.task, {}))
        cells = [
            str(row.client_id),
            row.task.replace("|", "\\|"),
            metric,
            _fmt(row.metrics.get(metric)),
            _fmt(row.metrics.get("loss")),
            _fmt_count(row.metrics.get("num-examples")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
