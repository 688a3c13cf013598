"""Per-client ε of a DP-SGD run (``dp-sgd = true``), read from ``metrics.jsonl``'s train rows.

Each DP-SGD client reports ``dp-sgd-epsilon`` (its ε so far, over every round
it trained in) and ``dp-sgd-delta`` with each train reply
(:mod:`fedmtl.private_training`). A client's final ε is the one of its last
train row; ``summary.json`` keeps them under ``"dp-sgd"`` and ``report.md``
shows them as a table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedmtl.records import DP_SGD_DELTA, DP_SGD_EPSILON
from fedmtl.results.round_record import RoundRecord


def dp_sgd_summary(records: Sequence[RoundRecord]) -> dict[str, Any] | None:
    """``{"delta", "epsilon-max", "clients": {id: {"epsilon", "rounds"}}}``; None: no DP-SGD.

    ``rounds`` counts the rounds the client trained in (and reported ε).
    """
    clients: dict[int, dict[str, float]] = {}
    deltas: set[float] = set()
    for record in records:
        seen = set()
        for row in record.train.clients:
            if DP_SGD_EPSILON not in row.metrics or row.client_id in seen:
                continue
            seen.add(row.client_id)
            entry = clients.setdefault(row.client_id, {"epsilon": 0.0, "rounds": 0})
            entry["epsilon"] = float(row.metrics[DP_SGD_EPSILON])
            entry["rounds"] += 1
            if DP_SGD_DELTA in row.metrics:
                deltas.add(float(row.metrics[DP_SGD_DELTA]))
    if not clients:
        return None
    return {
        "delta": max(deltas) if deltas else None,
        "epsilon-max": max(c["epsilon"] for c in clients.values()),
        "clients": {str(cid): clients[cid] for cid in sorted(clients)},
    }


def dp_sgd_table(summary: Mapping[str, Any]) -> list[str]:
    """The report's lines for ``summary["dp-sgd"]`` (none when the run had no DP-SGD)."""
    section = summary.get("dp-sgd")
    if not isinstance(section, Mapping):
        return []
    lines = [
        f"DP-SGD (example-level privacy): each client's final ε for δ = {section['delta']}, "
        f"max ε = {section['epsilon-max']:.3f}:",
        "",
        "| client | ε | rounds trained |",
        "|---:|---:|---:|",
    ]
    for cid, entry in section["clients"].items():
        lines.append(f"| {cid} | {entry['epsilon']:.3f} | {int(entry['rounds'])} |")
    return lines
