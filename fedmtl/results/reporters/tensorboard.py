"""TensorBoard: each round's :func:`~fedmtl.results.reporters.round_scalars` as event files.

Written with torch's ``SummaryWriter`` into ``<run dir>/tensorboard/``
(``tensorboard --logdir runs/`` shows every run). Scalars are TensorBoard's
usual float32 ``simple_value``. A resumed run opens a new event file with
``purge_step`` = the first round it redoes: TensorBoard's readers (the UI and
``EventAccumulator``) then drop the old file's events from that round on, so
each round appears once.

Needs the ``tensorboard`` package (``pip install "fedmtl[tracking]"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from fedmtl.config import ExperimentConfig
from fedmtl.results.config_file import to_toml
from fedmtl.results.reporters import round_scalars
from fedmtl.results.round_record import RoundRecord
from fedmtl.results.run_directory import RunDirectory

#: The folder of a run directory holding the event files.
TENSORBOARD_DIR = "tensorboard"


class TensorBoardReporter:
    """Mirror every round to ``<run dir>/tensorboard/`` (step = round)."""

    def __init__(self) -> None:
        self.writer: SummaryWriter | None = None

    def start(self, cfg: ExperimentConfig, run: RunDirectory, first_round: int) -> None:
        """Open the writer; a resumed run purges what it will redo (``first_round`` on)."""
        self.writer = SummaryWriter(
            log_dir=str(run.path / TENSORBOARD_DIR),
            purge_step=first_round if first_round > 0 else None,
        )
        if first_round == 0:
            text = to_toml(cfg.to_dict())
            self.writer.add_text("config", "```toml\n" + text + "\n```", 0)

    def round(self, record: RoundRecord) -> None:
        """Write the round's scalars and flush them (a killed run keeps them)."""
        if self.writer is None:
            raise RuntimeError("TensorBoardReporter.round before start")
        for tag, value in round_scalars(record).items():
            self.writer.add_scalar(tag, value, record.round)
        self.writer.flush()

    def close(self, summary: Mapping[str, Any] | None) -> None:
        """Close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
