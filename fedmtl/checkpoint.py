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

from fedmtl.assembly import resolved
from fedmtl.atomic import atomic_file
from fedmtl.config import ConfigError, ExperimentConfig, load_experiment
from fedmtl.records import NDArrays
from fedmtl.results.files import CHECKPOINT_FILE, CONFIG_FILE
from fedmtl.results.reading import read_rounds

__all__ = [
    "CHECKPOINT_FILE",
    "Checkpoint",
    "load_checkpoint",
    "resume_point",
    "rounds_after",
    "save_checkpoint",
]
#: Keys a resumed run may change: more rounds.
RESUMABLE_CHANGES = frozenset({"num-rounds"})
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


def resume_point(run_dir: Path, cfg: ExperimentConfig, key: str = "resume") -> Checkpoint:
    """The checkpoint to continue ``run_dir`` from, once ``cfg`` is its saved config.

    ``cfg`` (resolved) must equal the run's ``config.toml`` but for
    :data:`RESUMABLE_CHANGES`, and reach at least the checkpoint's round.

    Raises
    ------
    ConfigError
        Naming ``key`` when ``run_dir`` is no fedmtl run or its checkpoint is
        missing or unreadable; naming the first differing experiment key when
        ``cfg`` is not the checkpointed run's config.
    """
    config_file = run_dir / CONFIG_FILE
    if not config_file.is_file():
        raise ConfigError(key, f"{config_file} not found: '{run_dir}' is not a fedmtl run")
    try:
        checkpoint = load_checkpoint(run_dir)
    except FileNotFoundError as exc:
        raise ConfigError(key, str(exc)) from None
    except Exception as exc:  # a truncated or foreign pickle: EOFError, UnpicklingError, ...
        raise ConfigError(
            key, f"{run_dir / CHECKPOINT_FILE} cannot be read ({type(exc).__name__}: {exc})"
        ) from None
    saved = resolved(load_experiment(config_file)).to_dict()
    if cfg.dp != "none" and cfg.dp_epsilon > 0 and saved.get("num-rounds") != cfg.num_rounds:
        # z is solved for num-rounds: a new count would price the rounds already
        # released at the new noise and under-report epsilon.
        raise ConfigError(
            "num-rounds",
            f"{cfg.num_rounds} differs from {saved.get('num-rounds')} in the checkpointed run "
            f"{run_dir}: with dp-epsilon the noise multiplier was solved for that many rounds; "
            "resume with the same num-rounds, or start the run with dp-noise-multiplier",
        )
    for name, value in resolved(cfg).to_dict().items():
        if name not in RESUMABLE_CHANGES and saved.get(name) != value:
            raise ConfigError(
                name,
                f"{value!r} differs from {saved.get(name)!r} in the checkpointed run "
                f"{run_dir}; a resumed run keeps its config (only "
                f"{', '.join(sorted(RESUMABLE_CHANGES))} may change)",
            )
    if cfg.num_rounds < checkpoint.server_round:
        raise ConfigError(
            "num-rounds",
            f"{cfg.num_rounds} is below the checkpoint's round {checkpoint.server_round}",
        )
    return checkpoint


def rounds_after(metrics_file: Path, checkpoint: Checkpoint | None) -> int:
    """Rounds recorded in ``metrics_file`` after ``checkpoint`` (0 without one).

    What a resumed run redoes: they ran once before the run was killed.
    """
    if checkpoint is None:
        return 0
    return sum(1 for r in read_rounds(metrics_file) if r.round > checkpoint.server_round)
