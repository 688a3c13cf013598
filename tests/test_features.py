"""Frozen-backbone feature cache: same tensor with or without it, memory and disk levels."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmtl.client_app import feature_cache_dir, feature_store_dir
from fedmtl.config import load_experiment
from fedmtl.features import (
    ENCODE_LOG_ENV,
    RUN_STORE_ENV,
    FeatureCache,
    backbone_fingerprint,
    extract_features,
    feature_key,
    inputs_fingerprint,
    run_feature_store,
)
from fedmtl.models import build_backbone


def _images(n: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32)


def _counter(value: torch.Tensor) -> tuple[list[int], object]:
    calls: list[int] = []

    def compute() -> torch.Tensor:
        calls.append(1)
        return value

    return calls, compute


def test_extract_features_equals_the_backbone_in_eval_mode_and_keeps_its_mode() -> None:
    # Prepare
    torch.manual_seed(0)
    backbone = build_backbone("digits-cnn")
    backbone.train()
    x = _images(70)
    # Execute
    features = extract_features(backbone, x, batch_size=32)
    # Assert
    assert backbone.training
    backbone.eval()
    with torch.no_grad():
        expected = backbone(torch.from_numpy(x))
    assert features.shape == (70, backbone.feature_dim)
    torch.testing.assert_close(features, expected)


def test_extract_features_of_no_inputs_has_the_feature_width() -> None:
    backbone = build_backbone("digits-cnn")
    assert extract_features(backbone, _images(0)).shape == (0, backbone.feature_dim)


def test_memory_cache_computes_once() -> None:
    # Prepare
    cache = FeatureCache("memory")
    calls, compute = _counter(torch.ones(3, 2))
    # Execute
    first = cache.get("k", compute)  # type: ignore[arg-type]
    second = cache.get("k", compute)  # type: ignore[arg-type]
    # Assert
    assert len(calls) == 1
    assert first is second
    assert (cache.hits, cache.misses) == (1, 1)


def test_off_mode_computes_every_time() -> None:
    cache = FeatureCache("off")
    calls, compute = _counter(torch.ones(3, 2))
    cache.get("k", compute)  # type: ignore[arg-type]
    cache.get("k", compute)  # type: ignore[arg-type]
    assert len(calls) == 2


def test_disk_cache_is_shared_by_processes(tmp_path: Path) -> None:
    # Prepare: a first cache (one Ray worker) computes and writes
    value = torch.arange(6, dtype=torch.float32).reshape(3, 2)
    FeatureCache("disk", tmp_path).get("abcdef", lambda: value)
    # Execute: a second cache (another worker, or a later run) reads it
    calls, compute = _counter(torch.zeros(3, 2))
    again = FeatureCache("disk", tmp_path).get("abcdef", compute)  # type: ignore[arg-type]
    # Assert
    assert calls == []
    torch.testing.assert_close(again, value)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["abcdef.npy"]


def test_a_damaged_disk_entry_is_recomputed(tmp_path: Path) -> None:
    # Prepare
    FeatureCache("disk", tmp_path).get("abcdef", lambda: torch.ones(2, 2))
    next(tmp_path.rglob("*.npy")).write_bytes(b"not an array")
    calls, compute = _counter(torch.full((2, 2), 3.0))
    # Execute
    value = FeatureCache("disk", tmp_path).get("abcdef", compute)  # type: ignore[arg-type]
    # Assert
    assert len(calls) == 1
    assert float(value[0, 0]) == 3.0


def test_memory_budget_drops_least_recently_used() -> None:
    # Prepare: room for two 2x2 float32 tensors (16 bytes each)
    cache = FeatureCache("memory", budget_bytes=32)
    cache.get("a", lambda: torch.ones(2, 2))
    cache.get("b", lambda: torch.ones(2, 2))
    cache.get("a", lambda: torch.ones(2, 2))  # "a" is now the most recent
    # Execute
    cache.get("c", lambda: torch.ones(2, 2))
    calls_b, compute_b = _counter(torch.ones(2, 2))
    calls_a, compute_a = _counter(torch.ones(2, 2))
    cache.get("a", compute_a)  # type: ignore[arg-type]
    cache.get("b", compute_b)  # type: ignore[arg-type]
    # Assert
    assert calls_a == [] and calls_b == [1]


def test_disk_mode_needs_a_directory_and_modes_are_checked() -> None:
    with pytest.raises(ValueError, match="directory"):
        FeatureCache("disk")
    with pytest.raises(ValueError, match="'sometimes'"):
        FeatureCache("sometimes")


def test_fingerprints_follow_weights_and_inputs() -> None:
    # Prepare
    torch.manual_seed(0)
    a = build_backbone("digits-cnn")
    torch.manual_seed(0)
    same = build_backbone("digits-cnn")
    torch.manual_seed(1)
    other = build_backbone("digits-cnn")
    x = _images(4)
    # Assert
    assert backbone_fingerprint(a) == backbone_fingerprint(same)
    assert backbone_fingerprint(a) != backbone_fingerprint(other)
    assert inputs_fingerprint(x) == inputs_fingerprint(x.copy())
    assert inputs_fingerprint(x) != inputs_fingerprint(_images(4, seed=1))
    texts = np.array(["a b", "c"], dtype=object)
    assert inputs_fingerprint(texts) != inputs_fingerprint(np.array(["a", "b c"], dtype=object))
    assert feature_key("w1", x) != feature_key("w2", x)


def _slow_get(directory: str, log: str, start: float) -> None:
    """One worker process: wait for the common start, then ask for the entry (slow compute)."""

    def compute() -> torch.Tensor:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        return torch.ones(4, 3)

    time.sleep(max(0.0, start - time.time()))
    value = FeatureCache("memory", directory).get("abcdef", compute)
    assert float(value.sum()) == 12.0


def test_two_processes_asking_at_once_compute_once(tmp_path: Path) -> None:
    # Prepare: two processes (two Ray workers) miss the same entry at the same moment
    log = tmp_path / "computes.log"
    start = time.time() + 1.0
    ctx = multiprocessing.get_context("fork")
    workers = [
        ctx.Process(target=_slow_get, args=(str(tmp_path), str(log), start)) for _ in range(2)
    ]
    # Execute
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    # Assert: one computed, the other waited on the entry's lock and read the file
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(log.read_text().splitlines()) == 1
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["abcdef.npy", "computes.log"]  # no lock or temporary file left


def test_memory_mode_with_a_directory_shares_entries_between_processes(tmp_path: Path) -> None:
    # Prepare: the run's store, written by one worker's cache
    value = torch.arange(4, dtype=torch.float32).reshape(2, 2)
    first = FeatureCache("memory", tmp_path)
    first.get("abcdef", lambda: value)
    # Execute: another worker's cache
    calls, compute = _counter(torch.zeros(2, 2))
    other = FeatureCache("memory", tmp_path)
    again = other.get("abcdef", compute)  # type: ignore[arg-type]
    # Assert
    assert calls == []
    assert (first.hits, first.misses, other.hits, other.misses) == (0, 1, 1, 0)
    torch.testing.assert_close(again, value)


def test_an_empty_or_truncated_entry_is_recomputed_and_rewritten(tmp_path: Path) -> None:
    # Prepare: a file cut short (a writer killed without the atomic rename would never leave it)
    FeatureCache("memory", tmp_path).get("abcdef", lambda: torch.ones(8, 8))
    entry = next(tmp_path.rglob("*.npy"))
    entry.write_bytes(b"")
    calls, compute = _counter(torch.full((8, 8), 2.0))
    # Execute
    value = FeatureCache("memory", tmp_path).get("abcdef", compute)  # type: ignore[arg-type]
    # Assert: recomputed, and the rewritten file is whole
    assert len(calls) == 1 and float(value[0, 0]) == 2.0
    torch.testing.assert_close(torch.from_numpy(np.load(entry)), torch.full((8, 8), 2.0))


def test_run_feature_store_names_a_temporary_directory_and_removes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare
    monkeypatch.delenv(RUN_STORE_ENV, raising=False)
    # Execute
    with run_feature_store() as directory:
        assert directory is not None and directory.is_dir()
        assert os.environ[RUN_STORE_ENV] == str(directory)
        FeatureCache("memory", directory).get("abcdef", lambda: torch.ones(2))
    with run_feature_store(enabled=False) as nothing:
        assert nothing is None and RUN_STORE_ENV not in os.environ
    # Assert: the run's features and the variable are gone
    assert not directory.exists()
    assert RUN_STORE_ENV not in os.environ


def test_the_store_directory_follows_the_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    disk = load_experiment("digits", {"feature-cache": "disk", "output-dir": str(tmp_path)})
    memory = load_experiment("digits", {"output-dir": str(tmp_path)})
    monkeypatch.delenv(RUN_STORE_ENV, raising=False)
    # Assert: disk keeps its directory across runs; memory uses the run's, else none (a device)
    assert feature_store_dir(disk) == feature_cache_dir(disk)
    assert feature_store_dir(memory) == ""
    monkeypatch.setenv(RUN_STORE_ENV, str(tmp_path / "run"))
    assert feature_store_dir(memory) == str(tmp_path / "run")
    assert feature_store_dir(disk) == feature_cache_dir(disk)


def test_every_encode_is_logged_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    backbone = build_backbone("digits-cnn")
    log = tmp_path / "encodes.log"
    monkeypatch.setenv(ENCODE_LOG_ENV, str(log))
    # Execute
    extract_features(backbone, _images(5))
    extract_features(backbone, _images(3, seed=1))
    # Assert
    lines = [line.split() for line in log.read_text().splitlines()]
    assert lines == [
        [str(os.getpid()), inputs_fingerprint(_images(5)), "5"],
        [str(os.getpid()), inputs_fingerprint(_images(3, seed=1)), "3"],
    ]


def test_keys_differ_by_backbone_and_inputs_and_agree_otherwise() -> None:
    x, y = _images(4), _images(4, seed=2)
    keys = {feature_key(b, i) for b in ("w1", "w2") for i in (x, y)}
    assert len(keys) == 4
    assert feature_key("w1", x) == feature_key("w1", x.copy())
