"""Server checkpoints: everything a killed run needs to continue exactly.

A checkpoint is one pickle file, ``<run dir>/checkpoint.pkl``, replaced
atomically (written to a temporary file, flushed to disk, then renamed), so a
crash while saving leaves the previous checkpoint intact. It holds the round
counter, the global shared arrays, the strategy's state (task arrays, server
optimizer moments, per-round logs), the server's random states (Flower samples
nodes with Python's ``random``), how many lines of ``metrics.jsonl`` belong to
the rounds it covers, and the elapsed time. Clients' own state lives in the
client state store (``client-state = "disk"``), versioned by round.
"""

from __future__ import annotations

import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedmtl.atomic import atomic_file
from fedmtl.records import NDArrays
from fedmtl.results.files import CHECKPOINT_FILE

__all__ = ["CHECKPOINT_FILE", "Checkpoint", "load_checkpoint", "save_checkpoint"]
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """The state of a run after ``server_round``."""

    server_round: int
    shared: NDArrays
    strategy: dict[str, Any]
    random_state: Any
    numpy_state: Any
    metrics_lines: int
    elapsed_s: float

    @classmethod
    def capture(
        cls,
        server_round: int,
        shared: NDArrays,
        strategy: dict[str, Any],
        metrics_lines: int,
        elapsed_s: float,
    ) -> Checkpoint:
        """A checkpoint of now: the process's random states are read here."""
        return cls(
            server_round=server_round,
            shared=shared,
            strategy=strategy,
            random_state=random.getstate(),
            numpy_state=np.random.get_state(),
            metrics_lines=metrics_lines,
            elapsed_s=elapsed_s,
        )

    def restore_random(self) -> None:
        """Put the saved random states back into this process."""
        random.setstate(self.random_state)
        np.random.set_state(self.numpy_state)


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint.pkl`` atomically; return its path."""
    target = run_dir / CHECKPOINT_FILE
    with atomic_file(target) as fh:
        pickle.dump({"format": FORMAT_VERSION, "checkpoint": checkpoint}, fh)
    return target


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """Read ``<run_dir>/checkpoint.pkl``.

    Raises
    ------
    FileNotFoundError
        When the run never saved one (it ran without ``checkpoint-every``).
    ValueError
        When the file is not a fedmtl checkpoint of a known format.
    """
    path = run_dir / CHECKPOINT_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: the run saved no checkpoint (set checkpoint-every >= 1 "
            "to make runs resumable)"
        )
    with path.open("rb") as fh:
        payload = pickle.load(fh)  # our own file, in the user's run directory
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a fedmtl checkpoint of format {FORMAT_VERSION}")
    checkpoint: Checkpoint = payload["checkpoint"]
    return checkpoint
