"""The run directory: resolved config, per-round metrics, summary, final weights.

Layout of ``runs/<name>-<timestamp>/``::

    config.toml      the resolved experiment (re-runnable: fedmtl simulate config.toml)
    metrics.jsonl    one JSON record per round (round 0 = initial evaluation)
    summary.json     final and best per-task metrics, totals
    final/           shared.npz and task-<name>.npz: the final server-side weights
    plots/           accuracy.png, loss.png, bytes.png
Records are appended and flushed as each round ends, so a killed run keeps them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmtl.atomic import atomic_file, atomic_write_text
from fedmtl.config import ExperimentConfig
from fedmtl.plots import METRICS_FILE

SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.toml"


def toml_value(value: Any) -> str:
    """One value in TOML syntax (strings, numbers, booleans, lists, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(values: Mapping[str, Any]) -> str:
    """Write a flat mapping as TOML (strings, numbers, booleans, lists, inline tables)."""
    return "".join(f"{key} = {toml_value(value)}\n" for key, value in values.items())


class RunDirectory:
    """Writes one run's outputs. Create with :meth:`create`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, cfg: ExperimentConfig, root: Path | None = None) -> RunDirectory:
        """Make ``<root>/<name>-<timestamp>`` (suffixed if it exists) and write the config."""
        root = Path(root or cfg.output_dir)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = root / f"{cfg.name}-{stamp}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = root / f"{cfg.name}-{stamp}-{suffix}"
        path.mkdir(parents=True)
        run = cls(path)
        atomic_write_text(
            path / CONFIG_FILE, "# resolved fedmtl experiment\n" + to_toml(cfg.to_dict())
        )
        return run

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one round's record and flush it to disk."""
        with (self.path / METRICS_FILE).open("a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_metrics(self, lines: int) -> None:
        """Keep the first ``lines`` records of ``metrics.jsonl`` (a resumed run redoes the rest)."""
        path = self.path / METRICS_FILE
        kept = path.read_text().splitlines(keepends=True)[:lines] if path.exists() else []
        atomic_write_text(path, "".join(kept))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json`` atomically."""
        atomic_write_text(self.path / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True))

    def save_arrays(self, name: str, arrays: Mapping[str, npt.NDArray[np.generic]]) -> Path:
        """Save named arrays to ``final/<name>.npz``."""
        folder = self.path / "final"
        folder.mkdir(exist_ok=True)
        target = folder / f"{name}.npz"
        with atomic_file(target) as fh:
            np.savez(fh, **dict(arrays))  # type: ignore[arg-type]
        return target


def summarize_run(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Final-round and best-round per-task metrics, kept apart, plus totals."""
    evaluated = [r for r in records if r.get("evaluate", {}).get("tasks")]
    if not evaluated:
        return {"rounds": 0}
    first, last = evaluated[0], evaluated[-1]
    best: dict[str, dict[str, float]] = {}
    for record in evaluated:
        for task, stats in record["evaluate"]["tasks"].items():
            acc = stats.get("accuracy-mean")
            if acc is not None and acc > best.get(task, {}).get("accuracy-mean", -1.0):
                best[task] = {"round": record["round"], "accuracy-mean": acc}
    return {
        "rounds": last["round"],
        "initial": first["evaluate"]["tasks"],
        "final": last["evaluate"]["tasks"],
        "best-round": best,
        "bytes-up": sum(r.get("comm", {}).get("bytes-up", 0) for r in records),
        "bytes-down": sum(r.get("comm", {}).get("bytes-down", 0) for r in records),
        "wall-time-s": last.get("time", {}).get("elapsed-s"),
        "rejected-replies": sum(len(r.get("rejected", [])) for r in records),
        "failed-replies": sum(len(r.get("failures", [])) for r in records),
    }
