"""Thousands of clients on one small machine: wall time and peak memory of a 1,000-client run.

The MiniLM workload (simulations/text_minilm.toml: frozen pretrained encoder,
heads averaged per task) with 100 and with 1,000 clients, IID, 10% of the
clients sampled per round, a fixed seeded panel of 100 clients evaluated every
round, client state on disk (``client-state = "disk"``) and the features in a
disk cache. Memory is sampled from the whole process tree (driver, Ray and the
client workers); the ratio of the two runs shows what grows with the number of
clients.

    python benchmarks/scale.py [--clients 100 1000] [--rounds 5]

Writes results/scale.json and results/scale.md.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from common import run_experiment, write_results

EXPERIMENT = "text_minilm"


def overrides(clients: int, rounds: int, output: Path) -> dict[str, Any]:
    """One scale run: 10% trained per round, a 100-client evaluation panel."""
    return {
        "num-clients": clients,
        "partitioner": "iid",
        "max-examples-per-task": 8000,
        "fraction-train": 0.1,
        "evaluate-panel": min(100, clients),
        "num-rounds": rounds,
        "local-epochs": 1,
        "client-state": "disk",
        "feature-cache": "disk",
        "feature-cache-dir": str((output / "feature-cache").resolve()),
    }


def main() -> None:
    """Run each client count and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", nargs="+", type=int, default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output-dir", type=Path, default=Path("bench-runs/scale"))
    args = parser.parse_args()
    shutil.rmtree(args.output_dir, ignore_errors=True)
    rows: dict[str, dict[str, Any]] = {}
    for clients in args.clients:
        print(f"running: {clients} clients", flush=True)
        run = run_experiment(
            EXPERIMENT, overrides(clients, args.rounds, args.output_dir), args.output_dir
        )
        seconds = run.round_seconds()
        final = run.final_tasks()
        state_files = sum(1 for _ in (run.run_dir / "client-state").rglob("*.npz"))
        rows[str(clients)] = {
            "wall-s": round(run.wall_s, 1),
            "round-0-s": round(seconds[0], 1),
            "rounds-1+-mean-s": round(sum(seconds[1:]) / max(len(seconds) - 1, 1), 2),
            "peak-rss-total-mb": round(run.peak_rss_total_mb),
            "peak-rss-process-mb": round(run.peak_rss_process_mb),
            "trained-per-round": len(run.records[1].train.clients),
            "evaluated-per-round": len(run.records[-1].evaluate.clients),
            "client-state-files": state_files,
            "final-accuracy-mean": {t: round(s["accuracy-mean"], 3) for t, s in final.items()},
        }
    lines = [
        f"MiniLM frozen, IID, 10% of clients trained per round, 100-client panel, "
        f"{args.rounds} rounds, 2 CPU cores:",
        "",
        "| clients | wall s | round 0 s | later rounds s | peak RSS all processes MB "
        "| largest process MB | trained / evaluated per round | client state files |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for clients, row in rows.items():
        lines.append(
            f"| {clients} | {row['wall-s']} | {row['round-0-s']} | {row['rounds-1+-mean-s']} "
            f"| {row['peak-rss-total-mb']} | {row['peak-rss-process-mb']} "
            f"| {row['trained-per-round']} / {row['evaluated-per-round']} "
            f"| {row['client-state-files']} |"
        )
    write_results("scale", {"rounds": args.rounds, "runs": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
