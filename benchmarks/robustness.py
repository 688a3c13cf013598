"""Robust aggregation against sign-flipping clients on the default experiment.

Runs simulations/digits.toml without attackers (FedAvg) and with 20% of the
clients (seeded) sending ``w - 4 u`` instead of their update ``w + u``, under
FedAvg and Flower's robust rules on the shared backbone (median, trimmed mean,
Krum, Multi-Krum, Bulyan). Accuracy is over the *honest* clients only (each on
its own test split, final round); "recovered" is the share of FedAvg's drop a
rule wins back.

    python benchmarks/robustness.py [--fraction 0.2] [--seeds 0 1]

Writes results/robustness.json and results/robustness.md.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from common import run_experiment, write_results

from fedmtl.results import RunDirectory

RULES: dict[str, dict[str, Any]] = {
    "fedavg": {},
    "fedmedian": {},
    "fedtrimmedavg": {"beta": 0.2},
    "krum": {"num_malicious_nodes": 2},
    "multikrum": {"num_malicious_nodes": 2, "num_nodes_to_select": 6},
    "bulyan": {"num_malicious_nodes": 2},
}


def honest_accuracy(run_dir: Path) -> float:
    """Mean final-round accuracy over honest clients (per-task means, then averaged)."""
    run = RunDirectory(run_dir)
    bad = set(run.summary().get("attackers", []))
    by_task: dict[str, list[float]] = {}
    for row in run.rounds()[-1].evaluate.clients:
        if row.client_id not in bad:
            by_task.setdefault(row.task, []).append(row.metrics["accuracy"])
    return statistics.mean(statistics.mean(v) for v in by_task.values())


def main() -> None:
    """Run the clean baseline and every rule under attack; write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--output-dir", type=Path, default=Path("bench-runs/robustness"))
    args = parser.parse_args()
    attack = {"attack": "sign-flip", "attack-fraction": args.fraction, "attack-scale": 4.0}
    runs: dict[str, list[float]] = {}
    for seed in args.seeds:
        plan = [("fedavg, no attack", "fedavg", {})] + [(rule, rule, attack) for rule in RULES]
        for label, rule, extra in plan:
            print(f"running: {label}, seed {seed}", flush=True)
            overrides = {"strategy": rule, "seed": seed, **extra}
            if RULES.get(rule):
                overrides["strategy-options"] = RULES[rule]
            run = run_experiment("digits", overrides, args.output_dir)
            runs.setdefault(label, []).append(honest_accuracy(run.run_dir))
    clean = statistics.mean(runs["fedavg, no attack"])
    attacked = statistics.mean(runs["fedavg"])
    lines = [
        f"Default experiment, {args.fraction:.0%} sign-flipping clients (w - 4u), final round, "
        f"mean accuracy of the honest clients over tasks, {len(args.seeds)} seeds:",
        "",
        "| rule | accuracy | drop vs no attack | share of FedAvg's drop recovered |",
        "|---|---:|---:|---:|",
    ]
    for label, values in runs.items():
        mean = statistics.mean(values)
        recovered = (
            "-"
            if label.endswith("no attack") or clean == attacked
            else (f"{(mean - attacked) / (clean - attacked):.0%}")
        )
        lines.append(f"| {label} | {mean:.3f} | {clean - mean:+.3f} | {recovered} |")
    write_results(
        "robustness",
        {"fraction": args.fraction, "seeds": args.seeds, "runs": runs},
        "\n".join(lines),
    )


if __name__ == "__main__":
    main()
