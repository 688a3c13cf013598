"""Client state stores: memory (Context) and disk (versioned by round, atomic, pruned)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from fedmtl.client_state import ClientStateStore


def _context() -> Context:
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


def _state(value: float) -> dict[str, dict[str, np.ndarray]]:
    return {"local": {"heads.a.weight": np.full((2, 2), value, dtype=np.float32)}}


def _value(groups: dict[str, dict[str, np.ndarray]]) -> float:
    return float(groups["local"]["heads.a.weight"][0, 0])


def test_memory_store_keeps_the_latest_state_in_the_context() -> None:
    store, context = ClientStateStore("memory"), _context()
    assert store.load(context, 7, 0) == {}
    store.save(context, 7, 1, _state(1.0))
    store.save(context, 7, 2, _state(2.0))
    assert _value(store.load(context, 7, 5)) == 2.0
    assert "local" in context.state


def test_without_checkpoints_only_the_newest_version_stays(tmp_path: Path) -> None:
    store, context = ClientStateStore("disk", str(tmp_path)), _context()
    for server_round in (1, 3, 4):
        store.save(context, 7, server_round, _state(float(server_round)))
    assert store.versions(7) == [4]
    assert _value(store.load(context, 7, 10)) == 4.0


def test_disk_store_reads_the_newest_version_not_after_the_round(tmp_path: Path) -> None:
    # Prepare: the client trained in rounds 1, 3 and 4 (a checkpoint after round 0 keeps all)
    store, context = ClientStateStore("disk", str(tmp_path)), _context()
    for server_round in (1, 3, 4):
        store.save(context, 7, server_round, _state(float(server_round)), keep_from=0)
    # Assert: a train message of round r reads the state after round r - 1
    assert store.load(context, 7, 0) == {}
    assert _value(store.load(context, 7, 2)) == 1.0
    assert _value(store.load(context, 7, 3)) == 3.0
    assert _value(store.load(context, 7, 10)) == 4.0
    assert store.load(context, 8, 10) == {}  # another client
    assert len(context.state) == 0  # nothing held in RAM


def test_disk_store_prunes_only_what_the_last_checkpoint_no_longer_needs(tmp_path: Path) -> None:
    store, context = ClientStateStore("disk", str(tmp_path)), _context()
    store.save(context, 7, 1, _state(1.0), keep_from=0)
    store.save(context, 7, 3, _state(3.0), keep_from=2)
    # Checkpoint after round 2 needs version 1; version 3 may be redone after a resume
    store.save(context, 7, 5, _state(5.0), keep_from=2)
    assert store.versions(7) == [1, 3, 5]
    # Checkpoint after round 4 needs version 3: version 1 goes
    store.save(context, 7, 6, _state(6.0), keep_from=4)
    assert store.versions(7) == [3, 5, 6]
    assert not list(store.client_dir(7).glob("*.tmp"))


def test_disk_store_leaves_no_partial_file_when_a_save_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, context = ClientStateStore("disk", str(tmp_path)), _context()
    store.save(context, 7, 1, _state(1.0))

    def half_written(fh: Any, **arrays: Any) -> None:
        fh.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", half_written)
    with pytest.raises(OSError, match="disk full"):
        store.save(context, 7, 2, _state(2.0))
    assert store.versions(7) == [1]
    assert not list(store.client_dir(7).glob("*.tmp"))


def test_bad_modes_are_refused() -> None:
    with pytest.raises(ValueError, match="not in"):
        ClientStateStore("cloud")
    with pytest.raises(ValueError, match="directory"):
        ClientStateStore("disk")
