"""Client metric rows and their per-task summaries (plain Python, shared by server and reports)."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Metrics where lower is better (also any "*-loss"); every other one is higher-is-better.
#: Holds the error metrics that the task kinds declare (``TaskKind.lower_is_better`` in
#: :mod:`fedmtl.task_kinds`, a layer above; tests/test_task_kinds.py checks they agree).
LOWER_IS_BETTER = frozenset({"loss", "train-loss", "mae", "rmse"})
#: Primary metric of each task kind (its first metric), in the order tables look for them.
PRIMARY_METRICS = {"classification": "accuracy", "regression": "mae"}
NOT_METRICS = frozenset({"num-examples", "client-id", "node-id", "task"})
#: A ``/`` marks a reply's packed key (``<task>/<name>``, ``grad-cosine/<a>/<b>``), never a
#: per-task row's own metric: summaries leave such keys out.
_PACKED = "/"


def lower_is_better(name: str) -> bool:
    """Whether a lower ``name`` is better (losses and errors), so its worst is the highest."""
    return name in LOWER_IS_BETTER or name.endswith("-loss")


def primary_metric(stats: Mapping[str, Any]) -> str:
    """The primary metric of one task's statistics (``accuracy``, ``mae``, ...).

    The first of :data:`PRIMARY_METRICS` with an ``<m>-mean`` entry; ``"accuracy"``
    when none has.
    """
    for name in PRIMARY_METRICS.values():
        if f"{name}-mean" in stats:
            return name
    return PRIMARY_METRICS["classification"]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation (NumPy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _std(values: list[float], mean: float) -> float:
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) if values else 0.0


def count_clients(rows: Iterable[Mapping[str, Any]]) -> int:
    """The distinct clients of these rows (a client holding several tasks has a row per task).

    Rows are counted by ``client-id``; a row without one counts as a client of its own.
    """
    seen: set[object] = set()
    for index, row in enumerate(rows):
        seen.add(("id", row["client-id"]) if "client-id" in row else ("row", index))
    return len(seen)


def summarize_by_task(clients: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Aggregate per-client metric rows into per-task statistics.

    Each row has ``task``, ``num-examples`` and numeric metrics; a client holding
    several tasks has one row per task, each with that task's own numbers. For
    each task and metric ``m`` this gives ``m-mean`` (unweighted over clients:
    every client counts once), ``m-std`` (population), ``m-worst`` (min, or max
    for losses and errors: :func:`lower_is_better`), ``m-p10`` (the value that
    10% of clients do worse than: the 10th percentile, or the 90th for losses
    and errors), plus ``num-clients`` (the clients holding the task:
    :func:`count_clients`) and ``num-examples``. Packed reply keys (with a
    ``/``, such as ``grad-cosine/a/b``) are not task metrics and are left out.
    """
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in clients:
        groups[str(row["task"])].append(row)
    out: dict[str, dict[str, float]] = {}
    for task in sorted(groups):
        rows = groups[task]
        stats: dict[str, float] = {
            "num-clients": count_clients(rows),
            "num-examples": sum(int(r.get("num-examples", 0)) for r in rows),
        }
        names = sorted({k for r in rows for k in r if k not in NOT_METRICS and _PACKED not in k})
        for name in names:
            values = [float(r[name]) for r in rows if isinstance(r.get(name), int | float)]
            if not values:
                continue
            mean = sum(values) / len(values)
            stats[f"{name}-mean"] = mean
            stats[f"{name}-std"] = _std(values, mean)
            lower_better = lower_is_better(name)
            stats[f"{name}-worst"] = max(values) if lower_better else min(values)
            stats[f"{name}-p10"] = percentile(values, 90 if lower_better else 10)
        out[task] = stats
    return out


@dataclass(frozen=True)
class ClientRow:
    """One client's metrics in one phase of one round (a row of ``metrics.jsonl``).

    Attributes
    ----------
    client_id : int
        The client's id (partition id in simulation, the device's id deployed).
    task : str
        The task of this row: a client holding several tasks has one row per task
        in a phase (:attr:`key` tells them apart).
    metrics : mapping of str to float
        ``num-examples``, ``loss`` and the task's metrics, as the client reported them.
    """

    client_id: int
    task: str
    metrics: Mapping[str, float]

    @property
    def key(self) -> tuple[int, str]:
        """``(client_id, task)``: what identifies a row within a phase."""
        return (self.client_id, self.task)

    def to_json(self) -> dict[str, Any]:
        """The row as written to ``metrics.jsonl``: ``client-id``, ``task``, then the metrics."""
        return {"client-id": self.client_id, "task": self.task, **self.metrics}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ClientRow:
        """Read a row written by :meth:`to_json` (numbers only kept as metrics)."""
        metrics = {
            k: v
            for k, v in row.items()
            if k not in ("client-id", "task") and isinstance(v, int | float)
        }
        return cls(client_id=int(row["client-id"]), task=str(row["task"]), metrics=metrics)


@dataclass(frozen=True)
class ReplyIssue:
    """A reply that was not used: rejected by validation, or a failure (error, no reply).

    Attributes
    ----------
    node_id : int or None
        The Flower node that should have replied (random per connection).
    client_id : int or None
        The client it serves, when known (stable across restarts).
    reason : str
        Why the reply was not used.
    """

    node_id: int | None
    client_id: int | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        """The row as written to ``metrics.jsonl``'s ``rejected`` and ``failures`` lists."""
        return {"node-id": self.node_id, "client-id": self.client_id, "reason": self.reason}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> ReplyIssue:
        """Read a row written by :meth:`to_json`."""
        node, client = row.get("node-id"), row.get("client-id")
        return cls(
            node_id=None if node is None else int(node),
            client_id=None if client is None else int(client),
            reason=str(row.get("reason", "")),
        )

    def sort_key(self) -> tuple[bool, int, int]:
        """Client id (unknown last), then node id: reproducible whatever the arrival order."""
        return (self.client_id is None, self.client_id or 0, self.node_id or 0)


def summarize_rows(rows: Iterable[ClientRow]) -> dict[str, dict[str, float]]:
    """:func:`summarize_by_task` over typed rows."""
    return summarize_by_task(row.to_json() for row in rows)


def tasks_by_client(rows: Iterable[ClientRow]) -> dict[int, tuple[str, ...]]:
    """Each client's tasks among these rows (sorted), clients in id order."""
    held: dict[int, set[str]] = defaultdict(set)
    for row in rows:
        held[row.client_id].add(row.task)
    return {client: tuple(sorted(held[client])) for client in sorted(held)}


def seed_sd(values: Sequence[float]) -> float:
    """Sample sd (ddof 1) over seeds; 0 for one seed; NaN when a value is not finite.

    ``statistics.stdev`` raises on NaN or inf instead; a diverged seed must show
    in the table, not stop it being written.
    """
    if len(values) < 2:
        return 0.0
    if not all(math.isfinite(v) for v in values):
        return math.nan
    return statistics.stdev(values)
