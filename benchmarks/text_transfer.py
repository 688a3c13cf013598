"""Transfer gain on text: pretrained MiniLM vs. an encoder trained from scratch.

Runs simulations/text_minilm.toml (MiniLM frozen, heads averaged per task) and
simulations/text_scratch.toml (same clients, data and training; a bag-of-words
encoder trained from scratch and shared by all clients), for each seed, and
tabulates the final round's per-task client accuracy: mean over clients (and, with
several seeds, its standard deviation over seeds) and the worst client.

    python benchmarks/text_transfer.py [--seeds 0 1] [--output-dir bench-runs]

Writes results/text_transfer.json and results/text_transfer.md.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from common import RunResult, run_experiment, write_results

EXPERIMENTS = {
    "MiniLM, frozen (text_minilm)": ("text_minilm", {}),
    "from scratch (text_scratch)": ("text_scratch", {}),
}


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    """Run both experiments for every seed; write the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--output-dir", type=Path, default=Path("bench-runs/text-transfer"))
    args = parser.parse_args()
    results: dict[str, list[RunResult]] = {label: [] for label in EXPERIMENTS}
    for label, (experiment, overrides) in EXPERIMENTS.items():
        for seed in args.seeds:
            print(f"running: {label}, seed {seed}", flush=True)
            run = run_experiment(experiment, {**overrides, "seed": seed}, args.output_dir)
            results[label].append(run)
    tasks = sorted(next(iter(results.values()))[0].final_tasks())
    header = " | ".join(f"{t} mean | {t} worst" for t in tasks)
    lines = [
        f"Final-round client accuracy per task (mean over clients, worst client); "
        f"seeds {args.seeds}; 12 clients, 4 per task, Dirichlet(1.0) label skew.",
        "",
        f"| backbone | {header} | run wall (s) |",
        "|---|" + "---:|" * (2 * len(tasks) + 1),
    ]
    payload: dict[str, Any] = {"seeds": args.seeds, "runs": {}}
    for label, runs in results.items():
        cells = []
        per_task: dict[str, Any] = {}
        for task in tasks:
            means = [r.final_tasks()[task]["accuracy-mean"] for r in runs]
            worst = [r.final_tasks()[task]["accuracy-worst"] for r in runs]
            cells += [_cell(means), _cell(worst)]
            per_task[task] = {"accuracy-mean": means, "accuracy-worst": worst}
        wall = statistics.mean(r.wall_s for r in runs)
        lines.append(f"| {label} | {' | '.join(cells)} | {wall:.0f} |")
        payload["runs"][label] = {
            "tasks": per_task,
            "wall-s": [r.wall_s for r in runs],
            "run-dirs": [str(r.run_dir) for r in runs],
        }
    write_results("text_transfer", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
