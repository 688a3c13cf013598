"""Server checkpoints: atomic replacement, random states, resumable strategy state."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest

from fedmtl.checkpoint import CHECKPOINT_FILE, Checkpoint, load_checkpoint, save_checkpoint
from fedmtl.config import ConfigError, build_config
from fedmtl.results import METRICS_FILE, RoundRecord, RunDirectory


def _checkpoint(server_round: int) -> Checkpoint:
    return Checkpoint.capture(
        server_round, {"w": np.full(3, server_round, np.float32)}, {"inner": {}}, 4, 1.5
    )


def test_save_and_load_round_trip_with_random_states(tmp_path: Path) -> None:
    # Prepare
    random.seed(5)
    np.random.seed(5)
    save_checkpoint(tmp_path, _checkpoint(3))
    expected = (random.random(), float(np.random.random()))
    random.seed(99)
    np.random.seed(99)
    # Execute
    loaded = load_checkpoint(tmp_path)
    loaded.restore_random()
    # Assert
    assert loaded.server_round == 3 and loaded.metrics_lines == 4
    np.testing.assert_array_equal(loaded.shared["w"], [3.0, 3.0, 3.0])
    assert (random.random(), float(np.random.random())) == expected


def test_a_crash_while_saving_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path, _checkpoint(2))

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pickle, "dump", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, _checkpoint(3))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path).server_round == 2
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]


def test_missing_or_foreign_checkpoint_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint-every"):
        load_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT_FILE).write_bytes(pickle.dumps({"something": "else"}))
    with pytest.raises(ValueError, match="not a fedmtl checkpoint"):
        load_checkpoint(tmp_path)


def test_truncate_metrics_keeps_the_checkpointed_rounds(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    for server_round in range(5):
        run.append_metrics(RoundRecord(round=server_round))
    run.truncate_metrics(3)
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [0, 1, 2]
    assert [r.round for r in run.rounds()] == [0, 1, 2]


def test_checkpointing_needs_client_state_on_disk() -> None:
    assert build_config({"checkpoint-every": 2}).client_state_mode == "disk"
    assert build_config({}).client_state_mode == "memory"
    with pytest.raises(ConfigError, match="client-state"):
        build_config({"checkpoint-every": 2, "client-state": "memory"})
