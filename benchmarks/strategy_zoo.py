"""Compare strategies on label-skewed and IID variants of the default experiment.

For each variant (pathological: 2 digit classes per client; IID) and each strategy,
runs simulations/digits.toml and tabulates the final round's client accuracy per
task: mean over the task's clients and the worst client. Personalization
strategies bring their scope presets; ``fedavg`` here is the global model (heads
averaged per task), the usual FedAvg baseline of personalization papers.

    python benchmarks/strategy_zoo.py [--strategies fedavg fedper ...] [--rounds 10]

Writes results/strategy_zoo.json and results/strategy_zoo.md.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from common import run_experiment, write_results

VARIANTS: dict[str, dict[str, Any]] = {
    "pathological (2 classes per client)": {
        "partitioner": "pathological",
        "classes-per-client": 2,
    },
    "iid": {"partitioner": "iid"},
}
# FedAvg as a global model: the heads are averaged per task too.
GLOBAL_SCOPES = {
    "scopes-from": "experiment",
    "scope-task": ["heads.*"],
    "scope-local": ["*.num_batches_tracked"],
    "scope-shared": ["backbone.*"],
}
DEFAULT_STRATEGIES = [
    "fedavg",
    "fedper",
    "fedrep",
    "lg-fedavg",
    "fedbn",
    "local-only",
    "task-balanced",
    "conflict-averse",
]


def main() -> None:
    """Run every strategy on every variant and write the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=DEFAULT_STRATEGIES)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--output-dir", type=Path, default=Path("bench-runs/strategy-zoo"))
    args = parser.parse_args()
    payload: dict[str, Any] = {"rounds": args.rounds, "variants": {}}
    lines: list[str] = []
    for variant, data in VARIANTS.items():
        rows: dict[str, dict[str, Any]] = {}
        for strategy in args.strategies:
            print(f"running: {variant}, {strategy}", flush=True)
            overrides = {**data, "strategy": strategy, "num-rounds": args.rounds}
            if strategy == "fedavg":
                overrides.update(GLOBAL_SCOPES)
            run = run_experiment("digits", overrides, args.output_dir)
            rows[strategy] = {"tasks": run.final_tasks(), "wall-s": run.wall_s}
        payload["variants"][variant] = rows
        tasks = sorted(next(iter(rows.values()))["tasks"])
        lines += [
            f"**{variant}**, final round {args.rounds}, client accuracy (mean / worst client):",
            "",
            "| strategy | " + " | ".join(tasks) + " | mean over tasks |",
            "|---|" + "---:|" * (len(tasks) + 1),
        ]
        for strategy, row in rows.items():
            cells = [
                f"{row['tasks'][t]['accuracy-mean']:.3f} / {row['tasks'][t]['accuracy-worst']:.3f}"
                for t in tasks
            ]
            overall = statistics.mean(row["tasks"][t]["accuracy-mean"] for t in tasks)
            lines.append(f"| {strategy} | {' | '.join(cells)} | {overall:.3f} |")
        lines.append("")
    write_results("strategy_zoo", payload, "\n".join(lines).rstrip())


if __name__ == "__main__":
    main()
