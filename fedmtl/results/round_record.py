"""One line of ``metrics.jsonl``, typed: :class:`RoundRecord` and its two :class:`PhaseRecord`.

The JSON form (``to_json`` / ``from_json``) is the file format::

    {"round": 3,
     "time": {"round-s": 1.2, "elapsed-s": 4.8},
     "comm": {"bytes-up": 123, "bytes-down": 456},
     "train":    {"tasks": {<task>: {"accuracy-mean": ..., ...}}, "clients": [<ClientRow>, ...]},
     "evaluate": {"tasks": {...}, "clients": [...]},
     "rejected": [<ReplyIssue>, ...], "failures": [<ReplyIssue>, ...],
     "skipped": false, "skip-reason": null,
     "strategy": {<metric>: <number>, ...},
     "task-similarity": {<task_a>: {<task_b>: <cosine>, ...}, ...},
     "client-task-similarity": {<task_a>: {<task_b>: <cosine>, ...}, ...},
     "client-task-similarity-clients": {<task_a>: {<task_b>: <count>, ...}, ...},
     "privacy": {"epsilon": ..., "delta": ..., "noise-multiplier": ..., "clip": ...}}

``privacy`` (written only by a run with ``dp``, :mod:`strategies.privacy`) holds ε
after this round for the run's δ, the noise multiplier and the clip norm used;
``epsilon`` is absent when the noise multiplier is 0 (no guarantee: ε infinite).

``task-similarity`` (written only in training rounds reporting a pair) holds, for
each pair of tasks with ``task_a < task_b``, the cosine of the task groups'
``num-examples``-weighted mean updates of the shared scope
(:mod:`strategies.interference`); a pair whose update was zero is left out.
``client-task-similarity`` (the same shape, written only when a client holding
two tasks reported them) holds the mean over those clients of the cosine
between the two tasks' gradients on the client's shared parameters (the
replies' ``grad-cosine/<a>/<b>``, :func:`fedmtl.records.gradient_cosines`);
``client-task-similarity-clients`` how many clients each of those means is over.
A client holding several tasks has one client row per task in a phase.

Reading is tolerant of what older or partial records lack: a missing section
reads as empty (``None`` for times and bytes), so plots show a gap rather than
a zero. Only ``round`` is required.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fedmtl.metrics import ClientRow, ReplyIssue, summarize_rows

Phase = Literal["train", "evaluate"]
PHASES: tuple[Phase, ...] = ("train", "evaluate")
#: Per-task statistics of a phase: task -> {"accuracy-mean": ..., "num-clients": ..., ...}.
TaskStats = Mapping[str, Mapping[str, float]]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _numbers(value: Any) -> dict[str, float]:
    """The numeric entries of a JSON object (anything else is dropped)."""
    return {str(k): v for k, v in _mapping(value).items() if _is_number(v)}


def _pairs(value: Any) -> dict[str, dict[str, float]]:
    """The ``{a: {b: number}}`` entries of a JSON object; empty rows are dropped."""
    rows = {
        str(a): {b: x for b, x in _numbers(row).items() if math.isfinite(x)}
        for a, row in _mapping(value).items()
    }
    return {a: row for a, row in rows.items() if row}


def _counts(value: Any) -> dict[str, dict[str, int]]:
    """The ``{a: {b: count}}`` entries of a JSON object (whole numbers >= 0); empty rows dropped."""
    rows = {
        str(a): {b: int(x) for b, x in _numbers(row).items() if x >= 0 and float(x).is_integer()}
        for a, row in _mapping(value).items()
    }
    return {a: row for a, row in rows.items() if row}


def _optional_float(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def _optional_int(value: Any) -> int | None:
    return int(value) if _is_number(value) else None


@dataclass(frozen=True)
class PhaseRecord:
    """One phase (train or evaluate) of a round.

    Attributes
    ----------
    tasks : mapping of str to mapping of str to float
        Per-task statistics over the clients (see :func:`fedmtl.metrics.summarize_by_task`).
    clients : tuple of ClientRow
        Every valid reply's metrics, in client-id order; a client holding several
        tasks has one row per task (each with that task's own metrics).
    """

    tasks: TaskStats = field(default_factory=dict)
    clients: tuple[ClientRow, ...] = ()

    @classmethod
    def of(cls, rows: Iterable[ClientRow]) -> PhaseRecord:
        """The phase of these client rows, with their per-task statistics."""
        kept = tuple(rows)
        return cls(tasks=summarize_rows(kept), clients=kept)

    def to_json(self) -> dict[str, Any]:
        """``{"tasks": ..., "clients": [...]}`` as written to ``metrics.jsonl``."""
        return {
            "tasks": {task: dict(stats) for task, stats in self.tasks.items()},
            "clients": [row.to_json() for row in self.clients],
        }

    @classmethod
    def from_json(cls, value: Any) -> PhaseRecord:
        """Read a phase section; a missing or malformed one is empty.

        Raises
        ------
        ValueError
            When a client row lacks ``client-id`` or ``task``.
        """
        section = _mapping(value)
        tasks = {
            str(task): _numbers(stats)
            for task, stats in _mapping(section.get("tasks")).items()
            if isinstance(stats, Mapping)
        }
        rows = section.get("clients")
        clients = []
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, Mapping) or "client-id" not in row or "task" not in row:
                raise ValueError(f"a client row needs 'client-id' and 'task', got {row!r}")
            clients.append(ClientRow.from_json(row))
        return cls(tasks=tasks, clients=tuple(clients))


@dataclass(frozen=True)
class RoundRecord:
    """What happened in one round (round 0: the initial model's evaluation).

    Attributes
    ----------
    round : int
        The server round.
    round_s, elapsed_s : float or None
        Seconds this round took, and since the run started (``None``: not recorded).
    bytes_up, bytes_down : int or None
        Array bytes received from and sent to clients.
    train, evaluate : PhaseRecord
        The phases' per-task statistics and client rows.
    rejected, failures : tuple of ReplyIssue
        Replies refused by validation, and errors or missing replies.
    skipped : bool
        Whether the round kept the previous weights.
    skip_reason : str or None
        Why it was skipped (``None`` when not, or when no reason was recorded).
    strategy : mapping of str to float
        The scalar metrics the strategy returned from its aggregation.
    task_similarity : mapping of str to mapping of str to float
        ``{task_a: {task_b: cosine}}`` of the task groups' mean shared-scope
        updates (``task_a < task_b``; empty: not recorded or fewer than two tasks).
    client_task_similarity : mapping of str to mapping of str to float
        ``{task_a: {task_b: cosine}}``: the mean over the clients holding both
        tasks of the cosine between their gradients on the client's shared
        parameters (empty: no client holds two tasks, or not recorded).
    client_task_similarity_clients : mapping of str to mapping of str to int
        How many clients each pair of ``client_task_similarity`` averages.
    privacy : mapping of str to float
        A DP run's ``epsilon`` (so far), ``delta``, ``noise-multiplier`` and ``clip``.
    """

    round: int
    round_s: float | None = None
    elapsed_s: float | None = None
    bytes_up: int | None = None
    bytes_down: int | None = None
    train: PhaseRecord = field(default_factory=PhaseRecord)
    evaluate: PhaseRecord = field(default_factory=PhaseRecord)
    rejected: tuple[ReplyIssue, ...] = ()
    failures: tuple[ReplyIssue, ...] = ()
    skipped: bool = False
    skip_reason: str | None = None
    strategy: Mapping[str, float] = field(default_factory=dict)
    task_similarity: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    client_task_similarity: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    client_task_similarity_clients: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    privacy: Mapping[str, float] = field(default_factory=dict)

    def phase(self, name: Phase) -> PhaseRecord:
        """The ``"train"`` or ``"evaluate"`` phase."""
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; expected one of {list(PHASES)}")
        return self.train if name == "train" else self.evaluate

    @property
    def is_training_round(self) -> bool:
        """Rounds 1.. train; round 0 only evaluates the initial model."""
        return self.round >= 1

    def to_json(self) -> dict[str, Any]:
        """The record as one line of ``metrics.jsonl`` (before ``json.dumps``)."""
        time = {"round-s": self.round_s, "elapsed-s": self.elapsed_s}
        comm = {"bytes-up": self.bytes_up, "bytes-down": self.bytes_down}
        out: dict[str, Any] = {"round": self.round}
        if any(v is not None for v in time.values()):
            out["time"] = {k: v for k, v in time.items() if v is not None}
        if any(v is not None for v in comm.values()):
            out["comm"] = {k: v for k, v in comm.items() if v is not None}
        out.update(
            {
                "evaluate": self.evaluate.to_json(),
                "train": self.train.to_json(),
                "rejected": [issue.to_json() for issue in self.rejected],
                "failures": [issue.to_json() for issue in self.failures],
                "skipped": self.skipped,
                "skip-reason": self.skip_reason,
                "strategy": dict(self.strategy),
            }
        )
        if self.task_similarity:
            out["task-similarity"] = {a: dict(row) for a, row in self.task_similarity.items()}
        if self.client_task_similarity:
            out["client-task-similarity"] = {
                a: dict(row) for a, row in self.client_task_similarity.items()
            }
        if self.client_task_similarity_clients:
            out["client-task-similarity-clients"] = {
                a: dict(row) for a, row in self.client_task_similarity_clients.items()
            }
        if self.privacy:  # an infinite epsilon (no noise) is left out: JSON has no inf
            out["privacy"] = {k: v for k, v in self.privacy.items() if math.isfinite(v)}
        return out

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> RoundRecord:
        """Read a record written by :meth:`to_json` (or by an older fedmtl).

        Raises
        ------
        ValueError
            When ``round`` is missing or not an integer, or a client row is malformed.
        """
        number = record.get("round")
        if not isinstance(number, int) or isinstance(number, bool):
            raise ValueError(f"a round record needs an integer 'round', got {number!r}")
        time, comm = _mapping(record.get("time")), _mapping(record.get("comm"))
        reason = record.get("skip-reason")
        return cls(
            round=number,
            round_s=_optional_float(time.get("round-s")),
            elapsed_s=_optional_float(time.get("elapsed-s")),
            bytes_up=_optional_int(comm.get("bytes-up")),
            bytes_down=_optional_int(comm.get("bytes-down")),
            train=PhaseRecord.from_json(record.get("train")),
            evaluate=PhaseRecord.from_json(record.get("evaluate")),
            rejected=_issues(record.get("rejected")),
            failures=_issues(record.get("failures")),
            skipped=bool(record.get("skipped", False)),
            skip_reason=None if reason is None else str(reason),
            strategy=_numbers(record.get("strategy")),
            task_similarity=_pairs(record.get("task-similarity")),
            client_task_similarity=_pairs(record.get("client-task-similarity")),
            client_task_similarity_clients=_counts(record.get("client-task-similarity-clients")),
            privacy=_numbers(record.get("privacy")),
        )


def _issues(value: Any) -> tuple[ReplyIssue, ...]:
    rows = value if isinstance(value, list) else []
    return tuple(ReplyIssue.from_json(row) for row in rows if isinstance(row, Mapping))
