"""FedAvg vs FedBN vs FedPer under label skew, feature skew and both, on the default run.

Runs simulations/digits.toml (10 rounds) under three settings: label skew only
(the experiment's Dirichlet partition, no input shift); feature skew only (an
IID partition, clients split into 3 seeded groups whose inputs are rotated by
0, 45 and 90 degrees: ``input-shift = "rotate"``); and both (the Dirichlet
partition with the rotations). Tabulates the final round's client accuracy per
task (mean over the task's clients / worst client), the mean over tasks and the
worst client overall, each averaged over seeds (± the standard deviation over
seeds of the mean over tasks). With a shift it also splits the clients by their
rotation (:func:`fedmtl.data.shifts.client_levels`).

Two more arms show the fine-tuning modes under the same skews: FedPer with a
frozen backbone (``fedper-frozen``: linear probes on the pretrained features)
and with only the backbone's last block trained (``fedper-last1``).

FedBN and FedPer bring their scope presets (FedBN: batch norm local, heads per
task, the rest shared; FedPer: backbone shared, heads local). FedAvg has no
preset, so it runs the global model of ``strategy_zoo.py``: backbone shared,
each head averaged over its task's clients (with the experiment's own scopes,
FedAvg would be FedPer).

    python benchmarks/feature_skew.py [--settings label feature both] [--seeds 0 1]

Writes results/feature_skew.json and results/feature_skew.md. A finished run is
not repeated: results of each (setting, strategy, seed) are cached in
``--output-dir`` (``--fresh`` ignores them).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from common import cached_run, mean_spread, write_results
from strategy_zoo import overrides_for, task_cells

from fedmtl.data.shifts import client_levels
from fedmtl.results import RunDirectory

ROTATE = {"input-shift": "rotate", "input-shift-strength": 90.0, "input-shift-groups": 3}
SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "label": ("label skew only (Dirichlet alpha 1.0, no shift)", {}),
    "feature": ("feature skew only (IID, 3 groups rotated 0/45/90 deg)", {
        "partitioner": "iid", **ROTATE,
    }),
    "both": ("label + feature skew (Dirichlet alpha 1.0, rotated 0/45/90 deg)", ROTATE),
}  # fmt: skip
STRATEGIES = ["fedavg", "fedbn", "fedper"]
# Fine-tuning modes under the same skews: FedPer (backbone shared, heads local) with a frozen
# backbone (linear probes on the pretrained features) or only its last block trained.
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "fedper-frozen": ("fedper", {"finetune": "frozen"}),
    "fedper-last1": ("fedper", {"finetune": "last-k", "finetune-blocks": 1}),
}


def final_metrics(run_dir: Path) -> dict[str, Any]:
    """Final-round task stats, the worst client and the mean accuracy by rotation."""
    run = RunDirectory(run_dir)
    last = run.rounds()[-1].evaluate
    config = run.summary()["config"]
    accuracy = {row.client_id: row.metrics["accuracy"] for row in last.clients}
    by_level: dict[str, float] = {}
    if config.get("input-shift", "none") != "none":
        levels = client_levels(config["num-clients"], config["input-shift-groups"], config["seed"])
        strength = float(config["input-shift-strength"])
        groups: dict[float, list[float]] = {}
        for client, value in accuracy.items():
            groups.setdefault(float(levels[client]) * strength, []).append(value)
        by_level = {f"{angle:g}": statistics.mean(v) for angle, v in sorted(groups.items())}
    return {
        "tasks": last.tasks,
        "worst-client": min(accuracy.values()),
        "accuracy-by-shift": by_level,
    }


def run_cached(strategy: str, setting: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Final-round metrics of one run, from the cache when it already ran."""
    name, extra = ARMS.get(strategy, (strategy, {}))
    overrides = overrides_for(name, {**SETTINGS[setting][1], **extra}, seed, args.rounds)
    return cached_run(
        args.output_dir / "results" / f"{setting}-{strategy}-seed{seed}.json",
        args.fresh,
        f"{setting}, {strategy}, seed {seed}",
        "digits",
        overrides,
        args.output_dir / "runs",
        lambda run: final_metrics(run.run_dir),
    )


def table(setting: str, rows: dict[str, list[dict[str, Any]]], rounds: int) -> list[str]:
    """Markdown table of one setting: per task mean / worst client, averaged over seeds."""
    first = next(iter(rows.values()))
    tasks = sorted(first[0]["tasks"])
    angles = list(first[0]["accuracy-by-shift"])
    lines = [
        f"**{SETTINGS[setting][0]}**, round {rounds}, client accuracy (mean / worst client, "
        f"averaged over {len(first)} seeds; ± is the std over seeds):",
        "",
        "| strategy | "
        + " | ".join(tasks)
        + " | mean over tasks | worst client |"
        + "".join(f" {angle} deg |" for angle in angles),
        "|---|" + "---:|" * (len(tasks) + 2 + len(angles)),
    ]
    for strategy, runs in rows.items():
        cells, overall = task_cells(runs, list(tasks))
        cells.append(mean_spread(overall))
        cells.append(mean_spread([r["worst-client"] for r in runs]))
        for angle in angles:
            cells.append(f"{statistics.mean(r['accuracy-by-shift'][angle] for r in runs):.3f}")
        lines.append(f"| {strategy} | {' | '.join(cells)} |")
    return [*lines, ""]


def main() -> None:
    """Run every strategy in every setting and seed; write the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--strategies", nargs="+", default=[*STRATEGIES, *ARMS])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--output-dir", type=Path, default=Path("bench-runs/feature-skew"))
    parser.add_argument("--fresh", action="store_true", help="rerun cached runs too")
    args = parser.parse_args()
    payload: dict[str, Any] = {"rounds": args.rounds, "seeds": args.seeds, "settings": {}}
    lines: list[str] = []
    for setting in args.settings:
        rows = {
            strategy: [run_cached(strategy, setting, seed, args) for seed in args.seeds]
            for strategy in args.strategies
        }
        payload["settings"][setting] = {"description": SETTINGS[setting][0], "runs": rows}
        lines += table(setting, rows, args.rounds)
    lines.append(
        "Columns per rotation: mean accuracy (over tasks' clients) of the clients whose "
        "inputs are rotated by that angle."
    )
    write_results("feature_skew", payload, "\n".join(lines).rstrip())


if __name__ == "__main__":
    main()
