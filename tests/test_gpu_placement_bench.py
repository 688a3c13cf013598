"""benchmarks/gpu_placement.py's analysis: clients per GPU from probe rows, no-GPU results."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_placement.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_placement", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(pid: int, node: int, gpu: str, start: float, end: float, **extra: Any) -> dict[str, Any]:
    return {
        "pid": pid,
        "node": node,
        "type": "train",
        "start": start,
        "end": end,
        "ray-gpu-ids": [gpu] if gpu else [],
        "cuda-visible-devices": gpu or None,
        "peak-allocated-mb": 10.0 * pid,
        "allocated-mb": 1.0,
        "reserved-mb": 20.0 * pid,
        **extra,
    }


def test_max_overlap_counts_intervals_open_at_once(bench: ModuleType) -> None:
    assert bench.max_overlap([]) == 0
    assert bench.max_overlap([(0, 1), (1, 2), (2, 3)]) == 1  # back to back: one at a time
    assert bench.max_overlap([(0, 4), (1, 2), (1.5, 3), (5, 6)]) == 3


def test_placement_groups_workers_and_concurrency_by_gpu(bench: ModuleType) -> None:
    rows = [
        _row(1, 10, "0", 0.0, 2.0),
        _row(2, 11, "0", 1.0, 3.0),
        _row(1, 12, "0", 2.5, 4.0),  # worker 1 again, overlapping worker 2 only
        _row(3, 13, "1", 0.0, 1.0),
    ]

    placed = bench.placement(rows)

    assert placed["0"] == {
        "workers": 2,
        "clients": 3,
        "messages": 3,
        "max-concurrent-messages": 2,
        "max-concurrent-train-messages": 2,
    }
    assert placed["1"]["workers"] == 1
    memory = bench.memory_per_client(rows)
    assert memory["peak-allocated-mb-max"] == 30.0
    assert memory["reserved-per-worker-mb-max"] == 60.0


def test_rows_without_ray_gpus_fall_back_to_cuda_visible_devices(bench: ModuleType) -> None:
    row = _row(1, 1, "", 0.0, 1.0)
    assert bench.gpu_of(row) == "cpu"
    row["cuda-visible-devices"] = "3"
    assert bench.gpu_of(row) == "3"


@pytest.mark.parametrize(
    ("num_gpus", "gpus", "cpus", "allowed"),
    [(1.0, 1, 16, 1), (0.25, 1, 16, 4), (0.125, 1, 4, 4), (0.5, 0, 16, 0), (0.0, 0, 8, 8)],
)
def test_ray_allows_floor_one_over_num_gpus_per_gpu(
    bench: ModuleType, num_gpus: float, gpus: int, cpus: int, allowed: int
) -> None:
    assert bench.ray_allows(num_gpus, gpus, cpus) == allowed


def test_no_gpu_writes_that_nothing_was_measured(bench: ModuleType, tmp_path: Path) -> None:
    bench.no_gpu(tmp_path)

    saved = json.loads((tmp_path / "gpu_placement.json").read_text())
    assert saved["measured"] is False
    assert saved["reason"] == "no CUDA GPU visible: nothing measured"
    assert "nothing measured" in (tmp_path / "gpu_placement.md").read_text()


def test_no_gpu_keeps_a_measured_result(bench: ModuleType, tmp_path: Path) -> None:
    measured = {"measured": True, "settings": [{"client-num-gpus": 0.5}]}
    (tmp_path / "gpu_placement.json").write_text(json.dumps(measured))

    bench.no_gpu(tmp_path)

    assert json.loads((tmp_path / "gpu_placement.json").read_text()) == measured
