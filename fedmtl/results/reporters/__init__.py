"""Mirror each round's record to experiment trackers (TensorBoard, MLflow, a plug-in's).

The run directory stays the source of truth: a :class:`Reporter` only mirrors
what :class:`~fedmtl.results.RunDirectory` writes. The ServerApp opens the
reporters the ``trackers`` key names (:meth:`Reporters.open`) before round 1,
so a missing package or an unwritable tracker stops the run before it trains;
after that a reporter that fails is logged to stderr and switched off, and the
run goes on.

Every reporter writes the same numbers, :func:`round_scalars` of the record, at
step = round. A resumed run starts its reporters with ``first_round`` (the
first round it redoes): each tracker drops or skips what it had already logged
from that round on, so no round appears twice (see the reporter modules).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any, Protocol, TextIO, runtime_checkable

from fedmtl.config import ConfigError, ExperimentConfig
from fedmtl.results.round_record import RoundRecord
from fedmtl.results.run_directory import RunDirectory
from fedmtl.trackers import TRACKERS, TrackerUnavailableError

__all__ = ["Reporter", "Reporters", "round_scalars"]

# Sections of a record's JSON form that are not per-round scalars (client rows, issues).
_SKIPPED = frozenset({"round", "clients", "rejected", "failures", "skipped", "skip-reason"})


@runtime_checkable
class Reporter(Protocol):
    """What the ServerApp calls: once before round 1, once per round, once at the end."""

    def start(self, cfg: ExperimentConfig, run: RunDirectory, first_round: int) -> None:
        """Open the tracker for ``run``; ``first_round`` > 0: a resumed run redoes from there."""

    def round(self, record: RoundRecord) -> None:
        """Mirror one round's record (``record.round`` is the step)."""

    def close(self, summary: Mapping[str, Any] | None) -> None:
        """Finish (``summary``: the run's ``summary.json``; ``None``: the run stopped early)."""


def _flatten(value: Any, path: tuple[str, ...], out: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if str(key) not in _SKIPPED:
                _flatten(inner, (*path, str(key)), out)
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        out["/".join(path)] = float(value)


def round_scalars(record: RoundRecord) -> dict[str, float]:
    """The record's numbers, named by their path in ``metrics.jsonl`` (``/``-joined).

    A phase's task statistics drop the ``tasks`` level:
    ``evaluate/<task>/accuracy-mean``, ``train/<task>/loss-mean``; then
    ``time/round-s``, ``comm/bytes-up``, ``strategy/<metric>``,
    ``task-similarity/<a>/<b>`` and whatever numeric section a record carries
    (privacy accounting included). Client rows are left out; the counts of
    rejected and failed replies are ``replies/rejected`` and ``replies/failed``.
    Non-finite numbers are left out.
    """
    out: dict[str, float] = {}
    data = record.to_json()
    for phase in ("train", "evaluate"):
        section = data.pop(phase, {})
        _flatten(section.get("tasks", {}), (phase,), out)
    _flatten(data, (), out)
    if record.is_training_round:
        out["replies/rejected"] = float(len(record.rejected))
        out["replies/failed"] = float(len(record.failures))
    return out


class Reporters:
    """The run's open reporters; fans each call out, a failing one is logged and dropped.

    Parameters
    ----------
    reporters : mapping of str to Reporter
        Started reporters by tracker name.
    err : text stream
        Where failures are reported.
    """

    def __init__(self, reporters: Mapping[str, Reporter], err: TextIO | None = None) -> None:
        self.active = dict(reporters)
        self.err = err

    @classmethod
    def open(
        cls,
        cfg: ExperimentConfig,
        run: RunDirectory,
        first_round: int = 0,
        err: TextIO | None = None,
    ) -> Reporters:
        """Import and start the reporters of ``cfg.trackers`` (none: an empty set).

        Raises
        ------
        ConfigError
            For ``trackers``: an unknown name, or a tracker whose packages are
            missing (naming the extra to install). A reporter whose ``start``
            raises stops the run too (the others are closed first).
        """
        started: dict[str, Reporter] = {}
        try:
            for name in cfg.trackers:
                spec = TRACKERS.get(name)
                try:
                    spec.require(name)
                except TrackerUnavailableError as exc:
                    raise ConfigError("trackers", str(exc)) from None
                reporter = spec.load()()  # type: ignore[operator]
                if not isinstance(reporter, Reporter):
                    raise TypeError(f"tracker '{name}': {spec.factory} is not a Reporter")
                reporter.start(cfg, run, first_round)
                started[name] = reporter
        except BaseException:
            cls(started, err).close(None)
            raise
        return cls(started, err)

    def __bool__(self) -> bool:
        return bool(self.active)

    def _warn(self, name: str, action: str, exc: Exception) -> None:
        print(
            f"fedmtl: tracker '{name}' failed ({action}): {type(exc).__name__}: {exc}; "
            f"it is switched off, the run and its directory go on",
            file=self.err if self.err is not None else sys.stderr,
            flush=True,
        )

    def round(self, record: RoundRecord) -> None:
        """Mirror ``record`` to every active reporter."""
        for name, reporter in list(self.active.items()):
            try:
                reporter.round(record)
            except Exception as exc:  # a tracker never kills the run
                self._warn(name, f"round {record.round}", exc)
                del self.active[name]

    def close(self, summary: Mapping[str, Any] | None) -> None:
        """Close every reporter (errors are logged)."""
        for name, reporter in list(self.active.items()):
            try:
                reporter.close(summary)
            except Exception as exc:
                self._warn(name, "close", exc)
        self.active.clear()
