"""End-to-end runs of the fine-tuning modes and the feature cache on Ray (marked slow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedmtl.results import read_metrics
from fedmtl.run_model import run_scopes
from fedmtl.scopes import keys_in
from fedmtl.simulation import simulate
from tests.e2e_helpers import make_spy, read_spy, small

pytestmark = pytest.mark.slow


def _without_times(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


def test_feature_cache_changes_speed_not_results(tmp_path: Path) -> None:
    # Prepare: linear probing, the same seeded run with the cache off and on disk
    common = {"finetune": "frozen", "feature-cache-dir": str(tmp_path / "cache")}
    off = small(tmp_path / "off", **common, **{"feature-cache": "off"})
    disk = small(tmp_path / "disk", **common, **{"feature-cache": "disk"})
    # Execute
    off_dir, disk_dir = simulate(off), simulate(disk)
    # Assert: every per-client metric and every final array is identical
    off_records = read_metrics(off_dir / "metrics.jsonl")
    disk_records = read_metrics(disk_dir / "metrics.jsonl")
    assert [r["round"] for r in off_records] == [0, 1, 2]
    assert _without_times(off_records) == _without_times(disk_records)
    for name in sorted(p.name for p in (off_dir / "final").iterdir()):
        a, b = np.load(off_dir / "final" / name), np.load(disk_dir / "final" / name)
        assert sorted(a.files) == sorted(b.files)
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    # Assert: the disk cache holds one entry per client and split, written once
    entries = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(entries) == 3 * 2
    # Assert: the heads did learn (probing on the pretrained backbone)
    final = off_records[-1]["evaluate"]["tasks"]
    start = off_records[0]["evaluate"]["tasks"]
    assert all(final[t]["accuracy-mean"] > start[t]["accuracy-mean"] for t in final)


@pytest.mark.parametrize(
    "mode",
    [
        {"finetune": "lora", "lora-rank": 2, "lora-alpha": 4.0, "learning-rate": 0.01},
        {"finetune": "last-k", "finetune-blocks": 1},
    ],
    ids=["lora", "last-k"],
)
def test_replies_carry_exactly_the_shared_scope_of_the_mode(
    tmp_path: Path, mode: dict[str, Any]
) -> None:
    # Prepare
    cfg = small(tmp_path, **mode)
    expected = sorted(keys_in(run_scopes(cfg), "shared"))
    spy_dir = tmp_path / "spy"
    spy_dir.mkdir()
    # Execute
    run_dir = simulate(cfg, client_mods=[make_spy(spy_dir)])
    # Assert: what the scope table calls shared is exactly what travels
    logs = read_spy(spy_dir)
    assert len(logs) == 3
    for entries in logs.values():
        for entry in entries:
            assert entry["arrays"] == expected
            assert entry["task-arrays"] == []
    if mode["finetune"] == "lora":
        assert expected and all(".lora_" in k for k in expected)
    else:
        assert expected == ["backbone.proj.bias", "backbone.proj.weight"]
    records = read_metrics(run_dir / "metrics.jsonl")
    assert records[-1]["rejected"] == [] and not records[-1]["skipped"]


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in rows))
    return path


def test_text_clients_on_a_transformer_with_lora(tmp_path: Path) -> None:
    # Prepare: two text tasks from the users' own CSV files, a tiny local BERT, LoRA
    from tests.tiny_models import make_tiny_bert

    rng = np.random.default_rng(0)
    words = {"pos": ["good", "great", "nice"], "neg": ["bad", "awful", "poor"]}
    topics = {"sport": ["goal", "match", "team"], "tech": ["code", "chip", "data"]}

    def rows(vocab: dict[str, list[str]]) -> list[tuple[str, str]]:
        labels = sorted(vocab)
        out = []
        for i in range(48):
            label = labels[i % 2]
            out.append((" ".join(rng.choice(vocab[label], size=4)), label))
        return out

    data = {
        "sentiment": {"path": str(_write_csv(tmp_path / "sentiment.csv", rows(words)))},
        "topic": {"path": str(_write_csv(tmp_path / "topic.csv", rows(topics)))},
    }
    model_dir = make_tiny_bert(tmp_path / "tiny-bert")
    cfg = small(
        tmp_path,
        **{
            "dataset": "files",
            "dataset-options": {"tasks": data},
            "tasks": ["sentiment", "topic"],
            "num-clients": 2,
            "backbone": f"hf:{model_dir}",
            "backbone-options": {"max-length": 16},
            "finetune": "lora",
            "lora-rank": 2,
            "optimizer": "adam",
            "learning-rate": 0.01,
        },
    )
    expected = sorted(keys_in(run_scopes(cfg), "shared"))
    spy_dir = tmp_path / "spy"
    spy_dir.mkdir()
    # Execute
    run_dir = simulate(cfg, client_mods=[make_spy(spy_dir)])
    # Assert: only the query/value adapters travel, from both tasks' clients
    assert expected and all(".lora_" in k for k in expected)
    assert {k.split(".")[-4] for k in expected} == {"query", "value"}
    logs = read_spy(spy_dir)
    assert sorted(e["task"] for entries in logs.values() for e in entries[:1]) == [
        "sentiment",
        "topic",
    ]
    assert all(e["arrays"] == expected for entries in logs.values() for e in entries)
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["round"] for r in records] == [0, 1, 2]
    assert records[-1]["rejected"] == [] and not records[-1]["skipped"]
    assert sorted(records[-1]["evaluate"]["tasks"]) == ["sentiment", "topic"]
