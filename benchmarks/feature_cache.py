"""Frozen-backbone feature cache on the MiniLM workload (simulations/text_minilm.toml).

Three runs of the same seeded experiment: cache off (features recomputed every
round), disk cache cold (first run: computed once per client), disk cache warm (a
repeated run or another strategy: nothing computed). Reports wall time per round,
client updates per second, peak memory, and checks that all three give identical
metrics. Then the bytes one round sends under each fine-tuning mode, from the scope
table (and the frozen run's measured upload as a cross-check).

    python benchmarks/feature_cache.py [--rounds 3] [--output-dir bench-runs]

Writes results/feature_cache.json and results/feature_cache.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
from pathlib import Path
from typing import Any

from common import RunResult, run_experiment, write_results

from fedmtl.config import load_experiment, partition_spec
from fedmtl.results import RoundRecord
from fedmtl.scope_table import summarize_scopes
from fedmtl.scopes import FINETUNE_MODES

EXPERIMENT = "text_minilm"


def _comparable(result: RunResult) -> list[RoundRecord]:
    """The records without their timings (which differ from run to run)."""
    return [dataclasses.replace(r, round_s=None, elapsed_s=None) for r in result.records]


def _row(label: str, result: RunResult, clients: int) -> tuple[str, dict[str, Any]]:
    seconds = result.round_seconds()
    later = seconds[2:]  # rounds 2.. : every feature a client needs was computed before
    mean_later = statistics.mean(later)
    stats = {
        "initial-eval-s": seconds[0],
        "round-1-s": seconds[1],
        "later-round-mean-s": mean_later,
        "client-updates-per-s": clients / mean_later,
        "wall-s": result.wall_s,
        "peak-rss-total-mb": result.peak_rss_total_mb,
        "peak-rss-process-mb": result.peak_rss_process_mb,
    }
    line = (
        f"| {label} | {seconds[0]:.1f} | {seconds[1]:.1f} | {mean_later:.2f} | "
        f"{clients / mean_later:.2f} | {result.wall_s:.0f} | "
        f"{result.peak_rss_total_mb:,.0f} | {result.peak_rss_process_mb:,.0f} |"
    )
    return line, stats


def main() -> None:
    """Run the three cache settings and the bytes table; write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="federated rounds per run (>= 3)")
    parser.add_argument("--output-dir", type=Path, default=Path("bench-runs/feature-cache"))
    args = parser.parse_args()
    cache_dir = args.output_dir / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    common = {"num-rounds": max(args.rounds, 3), "feature-cache-dir": str(cache_dir.resolve())}
    runs = {
        "off (recompute every round)": {"feature-cache": "off"},
        "disk, cold (first run)": {"feature-cache": "disk"},
        "disk, warm (repeated run)": {"feature-cache": "disk"},
    }
    cfg = load_experiment(EXPERIMENT, common)
    results: dict[str, RunResult] = {}
    for label, overrides in runs.items():
        print(f"running: {label}", flush=True)
        results[label] = run_experiment(EXPERIMENT, {**common, **overrides}, args.output_dir)
    off, cold, warm = results.values()
    identical = _comparable(off) == _comparable(cold) == _comparable(warm)
    lines = [
        f"MiniLM frozen, {cfg.num_clients} clients, {cfg.max_examples_per_task} examples per "
        f"task, {cfg.num_rounds} rounds, 2 CPU cores. Seconds per round; updates = train "
        "replies per second in rounds 2+.",
        "",
        "| feature cache | initial eval (s) | round 1 (s) | rounds 2+ (s, mean) | updates/s "
        "| run wall (s) | peak RSS, all processes (MB) | peak RSS, largest process (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    payload: dict[str, Any] = {"experiment": EXPERIMENT, "config": cfg.to_dict(), "runs": {}}
    for label, result in results.items():
        line, stats = _row(label, result, cfg.num_clients)
        lines.append(line)
        payload["runs"][label] = stats
    speedup = (
        payload["runs"]["off (recompute every round)"]["later-round-mean-s"]
        / payload["runs"]["disk, cold (first run)"]["later-round-mean-s"]
    )
    payload["later-round-speedup"] = speedup
    payload["identical-metrics"] = identical
    lines += [
        "",
        f"Rounds 2+ are {speedup:.1f}x faster with the cache; metrics of all three runs "
        f"identical: {identical}.",
        "",
        "Bytes sent per round by all clients (scope table; heads averaged per task):",
        "",
        "| finetune | trainable parameters | sent per round, all clients |",
        "|---|---:|---:|",
    ]
    payload["bytes-per-round"] = {}
    client_tasks = [task for tasks in partition_spec(cfg).assignment() for task in tasks]
    for mode in FINETUNE_MODES:
        summary = summarize_scopes(dataclasses.replace(cfg, finetune=mode))
        per_round = sum(summary.sent_bytes[task] for task in client_tasks)
        label = f"last-k (k={cfg.finetune_blocks})" if mode == "last-k" else mode
        lines.append(f"| {label} | {summary.trainable:,} | {per_round / 2**20:,.2f} MiB |")
        payload["bytes-per-round"][mode] = per_round
    measured = off.records[1].bytes_up or 0
    payload["measured-bytes-up-frozen"] = measured
    lines.append("")
    lines.append(f"Measured upload of the frozen run in round 1: {measured / 2**20:,.2f} MiB.")
    write_results("feature_cache", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
