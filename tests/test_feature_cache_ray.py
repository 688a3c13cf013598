"""Encodes counted across Ray workers: one per client and split per run (marked slow).

Flower hands a client to whichever Ray worker is free; before the run's shared
feature store, each worker that served a client encoded its inputs again. Every
:func:`fedmtl.features.extract_features` call appends a line to the file named in
``FEDMTL_ENCODE_LOG`` (the workers of the local Ray inherit it), so the count is
taken across processes.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from fedmtl.config import ExperimentConfig, partition_spec
from fedmtl.data import client_tasks
from fedmtl.features import ENCODE_LOG_ENV, RUN_STORE_ENV, inputs_fingerprint
from fedmtl.simulation import simulate
from tests.e2e_helpers import small

pytestmark = pytest.mark.slow


def _encodes(log: Path) -> list[tuple[str, str]]:
    """(process id, inputs fingerprint) of every encode logged so far."""
    if not log.exists():
        return []
    return [(pid, fp) for pid, fp, _ in (line.split() for line in log.read_text().splitlines())]


def _splits(cfg: ExperimentConfig) -> set[str]:
    """Fingerprints of every client's train and test inputs."""
    spec = partition_spec(cfg)
    return {
        inputs_fingerprint(x)
        for cid in range(cfg.num_clients)
        for d in client_tasks(spec, cid)
        for x in (d.x_train, d.x_test)
    }


def test_default_cache_encodes_each_client_split_once_across_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: linear probing with the default cache, 6 clients on 2 workers, 4 rounds
    log = tmp_path / "encodes.log"
    monkeypatch.setenv(ENCODE_LOG_ENV, str(log))
    cfg = small(tmp_path, **{"finetune": "frozen", "num-clients": 6, "num-rounds": 4})
    assert cfg.feature_cache == "memory" and cfg.client_num_cpus == 1
    # Execute
    simulate(cfg)
    # Assert: exactly one encode per client and split, however the workers shared the clients
    encodes = _encodes(log)
    expected = _splits(cfg)
    assert len(expected) == 2 * cfg.num_clients
    assert Counter(fp for _, fp in encodes) == dict.fromkeys(expected, 1)
    assert len({pid for pid, _ in encodes}) >= 2, "clients ran on one worker only"
    assert RUN_STORE_ENV not in os.environ  # the run's store is gone with it


def test_disk_cache_encodes_once_across_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: two runs sharing one disk cache
    log = tmp_path / "encodes.log"
    monkeypatch.setenv(ENCODE_LOG_ENV, str(log))
    disk = {"finetune": "frozen", "feature-cache": "disk", "num-clients": 4}
    disk["feature-cache-dir"] = str(tmp_path / "cache")
    first, second = small(tmp_path / "a", **disk), small(tmp_path / "b", **disk)
    # Execute
    simulate(first)
    after_first = len(_encodes(log))
    simulate(second)
    # Assert: the first run encoded each client split once, the second none
    assert Counter(fp for _, fp in _encodes(log)) == dict.fromkeys(_splits(first), 1)
    assert after_first == 2 * first.num_clients
    assert len(sorted((tmp_path / "cache").rglob("*.npy"))) == 2 * first.num_clients
