"""Frozen-backbone feature cache: same tensor with or without it, memory and disk levels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedmtl.features import (
    FeatureCache,
    backbone_fingerprint,
    extract_features,
    feature_key,
    inputs_fingerprint,
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
