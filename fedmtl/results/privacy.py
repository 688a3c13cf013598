"""A client-level DP run's accounting (``dp``), read from ``metrics.jsonl``'s ``privacy`` sections.

Each training round of a run with ``dp = "central"`` or ``"local"`` records ε
after that round for the run's δ, the noise multiplier and the clip used
(:mod:`strategies.privacy`). ``summary.json`` keeps the last round's under
``"privacy"`` (with the ε after every round), ``report.md`` shows it, and a run
stopped by its budget (``dp-max-epsilon``) says so under ``"stopped"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from fedmtl.results.round_record import RoundRecord


def privacy_summary(records: Sequence[RoundRecord]) -> dict[str, Any] | None:
    """``{"epsilon", "delta", "noise-multiplier", "clip", "rounds", "epsilon-per-round"}``.

    ``epsilon`` is ``None`` when the noise multiplier is 0 (no guarantee); ``None``
    as a whole for a run without ``dp``.
    """
    private = [r for r in records if r.privacy]
    if not private:
        return None
    last = private[-1].privacy
    epsilon = last.get("epsilon")
    return {
        "epsilon": epsilon if epsilon is not None and math.isfinite(epsilon) else None,
        "delta": last.get("delta"),
        "noise-multiplier": last.get("noise-multiplier"),
        "clip": last.get("clip"),
        "rounds": len(private),
        "epsilon-per-round": {str(r.round): r.privacy.get("epsilon") for r in private},
    }


def privacy_lines(summary: Mapping[str, Any]) -> list[str]:
    """The report's lines for ``summary["privacy"]`` (none for a run without ``dp``)."""
    section = summary.get("privacy")
    if not isinstance(section, Mapping):
        return []
    epsilon = section.get("epsilon")
    spent = "infinite (noise multiplier 0: no guarantee)" if epsilon is None else f"{epsilon:.4g}"
    lines = [
        f"Client-level differential privacy after {section.get('rounds')} round(s): "
        f"epsilon {spent} for delta {section.get('delta'):g}, noise multiplier "
        f"{section.get('noise-multiplier'):.4g}, clip {section.get('clip'):.4g}."
    ]
    stopped = summary.get("stopped")
    if isinstance(stopped, str) and stopped.startswith("privacy budget"):
        lines += ["", f"Stopped early: {stopped}."]
    return lines
