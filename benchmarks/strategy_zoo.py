"""Compare every strategy of the zoo on label-skewed and IID variants of the default run.

For each variant (pathological: 3 digit classes per client; IID), each strategy and
each seed, runs simulations/digits.toml and tabulates the final round's client
accuracy per task: the mean over the task's clients and the worst client, each
averaged over seeds, plus the mean over tasks (± its standard deviation over
seeds). Personalization strategies bring their scope presets; every strategy
without one (Flower's and the multi-task aggregators) trains a global model: the
backbone is shared and each head is averaged over the clients of its task.

    python benchmarks/strategy_zoo.py [--strategies fedavg fedper ...] [--seeds 0 1]

Writes results/strategy_zoo.json and results/strategy_zoo.md. A finished run is
not repeated: results of each (variant, strategy, seed) are cached in
``--output-dir`` (``--fresh`` ignores them).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from common import cached_run, write_results

from strategies.registry import strategy_scope_preset

VARIANTS: dict[str, dict[str, Any]] = {
    "pathological (3 classes per client)": {
        "partitioner": "pathological",
        "classes-per-client": 3,
    },
    "iid": {"partitioner": "iid"},
}
# A global model: the backbone is shared, each head is averaged over its task's clients.
GLOBAL_SCOPES = {
    "scope-task": ["heads.*"],
    "scope-local": ["*.num_batches_tracked"],
    "scope-shared": ["backbone.*"],
}
FLOWER = [
    "fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad",
    "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan",
]  # fmt: skip
ZOO = [
    "fedper", "fedrep", "fedbabu", "lg-fedavg", "fedbn", "ditto", "local-only",
    "task-balanced", "conflict-averse", "clustered",
]  # fmt: skip
# Options a strategy needs to be itself (FedProx without mu is FedAvg).
OPTIONS: dict[str, dict[str, Any]] = {
    "fedprox": {"proximal_mu": 0.01},
    "multikrum": {"num_malicious_nodes": 1, "num_nodes_to_select": 6},
    "krum": {"num_malicious_nodes": 1},
    "bulyan": {"num_malicious_nodes": 1},
}


def overrides_for(strategy: str, variant: dict[str, Any], seed: int, rounds: int) -> dict[str, Any]:
    """The experiment overrides of one benchmark run."""
    overrides: dict[str, Any] = {
        **variant,
        "strategy": strategy,
        "num-rounds": rounds,
        "seed": seed,
    }
    if strategy in OPTIONS:
        overrides["strategy-options"] = OPTIONS[strategy]
    if strategy_scope_preset(strategy) is None:
        overrides.update(GLOBAL_SCOPES)
    return overrides


def run_cached(strategy: str, variant: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Final-round task metrics of one run, from the cache when it already ran."""
    slug = f"{variant.split()[0]}-{strategy}-seed{seed}"
    return cached_run(
        args.output_dir / "results" / f"{slug}.json",
        args.fresh,
        f"{variant}, {strategy}, seed {seed}",
        "digits",
        overrides_for(strategy, VARIANTS[variant], seed, args.rounds),
        args.output_dir / "runs",
        lambda run: {"tasks": run.final_tasks()},
    )


def task_cells(runs: list[dict[str, Any]], tasks: list[str]) -> tuple[list[str], list[float]]:
    """Per task ``mean / worst client`` cells averaged over runs, and each run's mean over tasks."""
    cells = []
    for task in tasks:
        mean = statistics.mean(r["tasks"][task]["accuracy-mean"] for r in runs)
        worst = statistics.mean(r["tasks"][task]["accuracy-worst"] for r in runs)
        cells.append(f"{mean:.3f} / {worst:.3f}")
    overall = [statistics.mean(r["tasks"][t]["accuracy-mean"] for t in tasks) for r in runs]
    return cells, overall


def table(variant: str, rows: dict[str, list[dict[str, Any]]], rounds: int) -> list[str]:
    """Markdown table of one variant: per task mean / worst client, averaged over seeds."""
    tasks = sorted(next(iter(rows.values()))[0]["tasks"])
    seeds = len(next(iter(rows.values())))
    lines = [
        f"**{variant}**, round {rounds}, client accuracy (mean / worst client, "
        f"averaged over {seeds} seeds):",
        "",
        "| strategy | " + " | ".join(tasks) + " | mean over tasks |",
        "|---|" + "---:|" * (len(tasks) + 1),
    ]
    for strategy, runs in rows.items():
        cells, overall = task_cells(runs, tasks)
        spread = f" ± {statistics.stdev(overall):.3f}" if len(overall) > 1 else ""
        lines.append(
            f"| {strategy} | {' | '.join(cells)} | {statistics.mean(overall):.3f}{spread} |"
        )
    return [*lines, ""]


def main() -> None:
    """Run every strategy on every variant and seed; write the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=FLOWER + ZOO)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--output-dir", type=Path, default=Path("bench-runs/strategy-zoo"))
    parser.add_argument("--fresh", action="store_true", help="rerun cached runs too")
    args = parser.parse_args()
    payload: dict[str, Any] = {"rounds": args.rounds, "seeds": args.seeds, "variants": {}}
    lines: list[str] = []
    for variant in VARIANTS:
        rows = {
            strategy: [run_cached(strategy, variant, seed, args) for seed in args.seeds]
            for strategy in args.strategies
        }
        payload["variants"][variant] = rows
        lines += table(variant, rows, args.rounds)
    write_results("strategy_zoo", payload, "\n".join(lines).rstrip())


if __name__ == "__main__":
    main()
