"""One run's directory on disk: create it, append round records, write the summary and weights.

Records are appended and flushed as each round ends, so a killed run keeps
them; everything else is replaced atomically. The layout is in
:mod:`fedmtl.results.files`.
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
from fedmtl.results.config_file import to_toml
from fedmtl.results.files import (
    CONFIG_FILE,
    FINAL_DIR,
    METRICS_FILE,
    PLOTS_DIR,
    REPORT_FILE,
    SUMMARY_FILE,
)
from fedmtl.results.reading import read_rounds, read_summary
from fedmtl.results.round_record import RoundRecord
from fedmtl.results.summary import RunOutcome


class RunDirectory:
    """Reads and writes one run's outputs. Create a new one with :meth:`create`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

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
            run.config_file, "# resolved fedmtl experiment\n" + to_toml(cfg.to_dict())
        )
        return run

    @classmethod
    def create_at(cls, cfg: ExperimentConfig, path: Path) -> RunDirectory:
        """Use ``path`` itself as a new run's directory (made if missing) and write the config."""
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        atomic_write_text(
            run.config_file, "# resolved fedmtl experiment\n" + to_toml(cfg.to_dict())
        )
        return run

    @property
    def config_file(self) -> Path:
        """``config.toml``: the resolved experiment."""
        return self.path / CONFIG_FILE

    @property
    def metrics_file(self) -> Path:
        """``metrics.jsonl``: one record per round."""
        return self.path / METRICS_FILE

    @property
    def summary_file(self) -> Path:
        """``summary.json``: final and best metrics, totals, outcome."""
        return self.path / SUMMARY_FILE

    @property
    def report_file(self) -> Path:
        """``report.md``: the round tables."""
        return self.path / REPORT_FILE

    @property
    def plots_dir(self) -> Path:
        """``plots/``."""
        return self.path / PLOTS_DIR

    def append_metrics(self, record: RoundRecord) -> None:
        """Append one round's record and flush it to disk."""
        with self.metrics_file.open("a") as fh:
            fh.write(json.dumps(record.to_json(), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_metrics(self, lines: int) -> None:
        """Keep the first ``lines`` records of ``metrics.jsonl`` (a resumed run redoes the rest)."""
        path = self.metrics_file
        kept = path.read_text().splitlines(keepends=True)[:lines] if path.exists() else []
        atomic_write_text(path, "".join(kept))

    def rounds(self) -> list[RoundRecord]:
        """The round records written so far (a truncated last line is skipped)."""
        return read_rounds(self.metrics_file)

    def summary(self) -> dict[str, Any]:
        """``summary.json`` as written (``{}`` before the run wrote one)."""
        return read_summary(self.summary_file)

    def outcome(self) -> RunOutcome:
        """How the run ended, from ``summary.json``.

        A run without a summary is a failure: its ServerApp stopped before the end.
        """
        if not self.summary_file.exists():
            return RunOutcome(
                failure=f"the run wrote no {SUMMARY_FILE}: it stopped before the end "
                "(see the output above)"
            )
        return RunOutcome.from_summary(self.summary())

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json`` atomically."""
        atomic_write_text(self.summary_file, json.dumps(summary, indent=2, sort_keys=True))

    def write_report(self, text: str) -> None:
        """Write ``report.md``."""
        self.report_file.write_text(text)

    def save_arrays(self, name: str, arrays: Mapping[str, npt.NDArray[np.generic]]) -> Path:
        """Save named arrays to ``final/<name>.npz``."""
        folder = self.path / FINAL_DIR
        folder.mkdir(exist_ok=True)
        target = folder / f"{name}.npz"
        with atomic_file(target) as fh:
            np.savez(fh, **dict(arrays))  # type: ignore[arg-type]
        return target
