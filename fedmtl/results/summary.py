"""A run's ``summary.json``: final and best per-task metrics, totals, and the run's outcome.

A run **fails** when it trained nothing: no client sent a valid training reply
in any round, or every training round was skipped (the strategy raised or
returned something unusable each time). Its summary then says
``"status": "failed"`` with the ``"failure"``; ``fedmtl simulate`` reads it
and exits non-zero. Skipped rounds are counted either way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedmtl.metrics import count_clients, lower_is_better, primary_metric
from fedmtl.results.dp_sgd import dp_sgd_summary
from fedmtl.results.privacy import privacy_summary
from fedmtl.results.round_record import RoundRecord

OK = "ok"
FAILED = "failed"
# How many skipped rounds a failure message lists before "...".
_LISTED = 3


def summarize_run(records: Sequence[RoundRecord]) -> dict[str, Any]:
    """Final-round and best-round per-task metrics, kept apart, plus totals.

    A task's best round is the one with the best mean of its primary metric
    (:func:`fedmtl.metrics.primary_metric`: accuracy, highest; a regression's
    MAE, lowest); the first such round wins ties. Its entry is ``{"round": r,
    "<metric>-mean": value}``. A task's ``num-clients`` counts the clients
    holding it; when some client holds several tasks, ``"clients"`` (the
    distinct clients evaluated in the final round) and ``"client-task-rows"``
    (their rows, one per client per task) are added.
    """
    evaluated = [r for r in records if r.evaluate.tasks]
    if not evaluated:
        return {"rounds": 0}
    first, last = evaluated[0], evaluated[-1]
    best: dict[str, dict[str, float]] = {}
    for record in evaluated:
        for task, stats in record.evaluate.tasks.items():
            key = f"{primary_metric(stats)}-mean"
            value = stats.get(key)
            if (
                value is not None
                and math.isfinite(value)
                and _better(key, value, best.get(task, {}).get(key))
            ):
                best[task] = {"round": record.round, key: value}
    summary: dict[str, Any] = {
        "rounds": last.round,
        "initial": _plain(first.evaluate.tasks),
        "final": _plain(last.evaluate.tasks),
        "best-round": best,
        "bytes-up": sum(r.bytes_up or 0 for r in records),
        "bytes-down": sum(r.bytes_down or 0 for r in records),
        "wall-time-s": last.elapsed_s,
        "rejected-replies": sum(len(r.rejected) for r in records),
        "failed-replies": sum(len(r.failures) for r in records),
    }
    rows = [row.to_json() for row in last.evaluate.clients]
    clients = count_clients(rows)
    if clients < len(rows):  # some client holds several tasks
        summary.update({"clients": clients, "client-task-rows": len(rows)})
    accounted = privacy_summary(records)  # client-level DP runs: epsilon so far
    if accounted is not None:
        summary["privacy"] = accounted
    private = dp_sgd_summary(records)  # DP-SGD runs: each client's final epsilon
    if private is not None:
        summary["dp-sgd"] = private
    return summary


def _better(key: str, value: float, incumbent: float | None) -> bool:
    """Whether ``value`` of ``<metric>-mean`` ``key`` beats ``incumbent`` (strictly)."""
    if incumbent is None:
        return True
    return value < incumbent if lower_is_better(key.removesuffix("-mean")) else value > incumbent


def _plain(tasks: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    return {task: dict(stats) for task, stats in tasks.items()}


@dataclass(frozen=True)
class SkippedRound:
    """A round that kept the previous weights, and why."""

    round: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        """``{"round": ..., "reason": ...}`` as in ``summary.json``'s ``skip-reasons``."""
        return {"round": self.round, "reason": self.reason}


@dataclass(frozen=True)
class RunOutcome:
    """Whether a run succeeded, and the rounds it skipped.

    Attributes
    ----------
    failure : str or None
        Why the run failed; ``None`` when it succeeded.
    skipped : tuple of SkippedRound
        Every skipped training round, in order.
    """

    failure: str | None = None
    skipped: tuple[SkippedRound, ...] = ()

    @property
    def failed(self) -> bool:
        """Whether the run failed."""
        return self.failure is not None

    @property
    def status(self) -> str:
        """``"ok"`` or ``"failed"``."""
        return FAILED if self.failed else OK

    def to_json(self) -> dict[str, Any]:
        """The outcome's keys of ``summary.json``."""
        return {
            "status": self.status,
            "failure": self.failure,
            "skipped-rounds": len(self.skipped),
            "skip-reasons": [s.to_json() for s in self.skipped],
        }

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> RunOutcome:
        """Read the outcome back from ``summary.json`` (a summary without one: a success)."""
        failure = summary.get("failure")
        if summary.get("status") == FAILED and failure is None:
            failure = "the run failed (no reason recorded)"
        rows = summary.get("skip-reasons")
        skipped = tuple(
            SkippedRound(int(row["round"]), str(row.get("reason", "")))
            for row in (rows if isinstance(rows, list) else [])
            if isinstance(row, Mapping) and "round" in row
        )
        return cls(failure=None if failure is None else str(failure), skipped=skipped)


def judge_run(records: Sequence[RoundRecord], stopped: str | None = None) -> RunOutcome:
    """The outcome of a run that wrote ``records``.

    Parameters
    ----------
    records : sequence of RoundRecord
        The run's rounds, round 0 included.
    stopped : str, optional
        Why the run stopped before its last round (it failed for this reason).
    """
    training = [r for r in records if r.is_training_round]
    skipped = tuple(
        SkippedRound(r.round, r.skip_reason or "no reason recorded") for r in training if r.skipped
    )
    failure = stopped
    if failure is None and training:
        if not any(r.train.clients for r in training):
            rejected = sum(len(r.rejected) for r in training)
            failed = sum(len(r.failures) for r in training)
            failure = (
                f"no client sent a valid training reply in any of the {len(training)} round(s) "
                f"({rejected} rejected, {failed} failed)"
            )
        elif len(skipped) == len(training):
            failure = f"every round was skipped ({describe_skips(skipped)})"
    return RunOutcome(failure=failure, skipped=skipped)


def describe_skips(skipped: Sequence[SkippedRound], limit: int | None = _LISTED) -> str:
    """``round 1: reason; round 2: reason; ...``: the first ``limit`` rounds (all: ``None``)."""
    shown = skipped if limit is None else skipped[:limit]
    text = "; ".join(f"round {s.round}: {s.reason}" for s in shown)
    return text + ("; ..." if len(shown) < len(skipped) else "")
