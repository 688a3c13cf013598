"""Per-task summaries of per-client metrics (plain Python, shared by server and reports)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

# Metrics where lower is better (also any "*-loss"); every other one is higher-is-better.
LOWER_IS_BETTER = frozenset({"loss", "train-loss"})
NOT_METRICS = frozenset({"num-examples", "client-id", "node-id", "task"})


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation (NumPy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _std(values: list[float], mean: float) -> float:
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) if values else 0.0


def summarize_by_task(clients: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Aggregate per-client metric rows into per-task statistics.

    Each row has ``task``, ``num-examples`` and numeric metrics. For each task and
    metric ``m`` this gives ``m-mean`` (unweighted over clients: every client
    counts once), ``m-std`` (population), ``m-worst`` (min, or max for losses),
    ``m-p10`` (the value that 10% of clients do worse than: the 10th percentile,
    or the 90th for losses), plus ``num-clients`` and ``num-examples``.
    """
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in clients:
        groups[str(row["task"])].append(row)
    out: dict[str, dict[str, float]] = {}
    for task in sorted(groups):
        rows = groups[task]
        stats: dict[str, float] = {
            "num-clients": len(rows),
            "num-examples": sum(int(r.get("num-examples", 0)) for r in rows),
        }
        names = sorted({k for r in rows for k in r if k not in NOT_METRICS})
        for name in names:
            values = [float(r[name]) for r in rows if isinstance(r.get(name), int | float)]
            if not values:
                continue
            mean = sum(values) / len(values)
            stats[f"{name}-mean"] = mean
            stats[f"{name}-std"] = _std(values, mean)
            lower_better = name in LOWER_IS_BETTER or name.endswith("-loss")
            stats[f"{name}-worst"] = max(values) if lower_better else min(values)
            stats[f"{name}-p10"] = percentile(values, 90 if lower_better else 10)
        out[task] = stats
    return out
