"""Task weightings on clients holding a classification, a regression and a noisy task.

Runs simulations/digits_multitask.toml with every client holding all three of
``tasks = ["digit", "digit-value", "ge5"]`` (``tasks-per-client = 3``; 12
clients, Dirichlet alpha 1.0; backbone shared, each head averaged over its
task's clients; 10 rounds, learning rate 0.02): ``digit`` is a 10-way
classification, ``digit-value`` a regression (MAE in digits) and ``ge5`` the
deliberately noisy task: ``label-noise = {ge5 = 0.4}`` moves 40% of every
client's ge5 *training* labels to the other class (its test labels stay clean,
so its accuracy says how much of the signal got through). Each weighting:

* ``equal``: the tasks' losses summed;
* ``fixed``: ``task-weights = {digit = 1, digit-value = 1, ge5 = 0.25}`` (the noisy
  task down-weighted by hand: what a weighting should find by itself);
* ``uncertainty``: learned log-variances ``s_t``, weights ``exp(-s_t)`` (Kendall et
  al. 2018); the final weights are read from each client's state on disk
  (``client-state = "disk"``, ``<run>/client-state/client-<id>/round-<R>.npz``);
* ``dwa``: dynamic weight average (Liu et al. 2019), temperature 2;
* ``pcgrad``: conflicting task gradients projected (Yu et al. 2020);

plus ``equal-clean``, equal weighting without the label noise (the reference
for what the noise costs). Tabulates, per task, the final round's mean over
clients and the worst client (accuracy; MAE for digit-value, worst is highest),
averaged over seeds (± the std over seeds); the mean over rounds (and seeds) of
the clients' task-gradient cosines per pair (metrics.jsonl
``client-task-similarity``); and for ``uncertainty`` the mean over clients of
the final ``exp(-s_t)``.

    python benchmarks/task_weighting.py [--weightings equal fixed ...] [--seeds 0 1]

Writes results/task_weighting.json and results/task_weighting.md. A finished
run is not repeated: each (weighting, seed) is cached in ``--output-dir``
(``--fresh`` ignores the cache).
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from common import cached_run, mean_spread, write_results

from fedmtl.client_app import WEIGHTING_STATE
from fedmtl.results import RunDirectory

EXPERIMENT = "digits_multitask"
TASKS = ["digit", "digit-value", "ge5"]
NOISY = "ge5"
NOISE = {NOISY: 0.4}
BASE: dict[str, Any] = {
    "tasks": TASKS,
    "tasks-per-client": 3,
    "client-state": "disk",
}
WEIGHTINGS: dict[str, dict[str, Any]] = {
    "equal": {"task-weighting": "equal", "label-noise": NOISE},
    "fixed": {
        "task-weighting": "fixed",
        "task-weights": {"digit": 1.0, "digit-value": 1.0, NOISY: 0.25},
        "label-noise": NOISE,
    },
    "uncertainty": {"task-weighting": "uncertainty", "label-noise": NOISE},
    "dwa": {"task-weighting": "dwa", "label-noise": NOISE},
    "pcgrad": {"task-weighting": "pcgrad", "label-noise": NOISE},
    "equal-clean": {"task-weighting": "equal"},
}
PRIMARY = {"digit": "accuracy", "digit-value": "mae", "ge5": "accuracy"}
_LOG_VARIANCE = f"{WEIGHTING_STATE}::log-variance/"  # one .npz key per task


def uncertainty_weights(run_dir: Path) -> dict[str, float]:
    """Mean over clients of ``exp(-s_t)`` in each client's newest saved state (empty: none)."""
    weights: dict[str, list[float]] = {}
    for folder in sorted((run_dir / "client-state").glob("client-*")):
        versions = sorted(folder.glob("round-*.npz"), key=lambda p: int(p.stem.split("-")[1]))
        if not versions:
            continue
        with np.load(versions[-1], allow_pickle=False) as data:
            for key in data.files:
                if key.startswith(_LOG_VARIANCE):
                    task = key.removeprefix(_LOG_VARIANCE)
                    weights.setdefault(task, []).append(math.exp(-float(data[key])))
    return {task: statistics.mean(values) for task, values in sorted(weights.items())}


def final_metrics(run_dir: Path) -> dict[str, Any]:
    """Final-round mean / worst client per task, cosines per round, uncertainty weights."""
    run = RunDirectory(run_dir)
    rounds = run.rounds()
    last = rounds[-1].evaluate.tasks
    tasks = {
        task: {
            "metric": metric,
            "mean": last[task][f"{metric}-mean"],
            "worst": last[task][f"{metric}-worst"],
            "num-clients": last[task]["num-clients"],
        }
        for task, metric in PRIMARY.items()
    }
    cosines: dict[str, list[float]] = {}
    for record in rounds:
        for a, row in record.client_task_similarity.items():
            for b, value in row.items():
                cosines.setdefault(f"{a}/{b}", []).append(value)
    return {
        "tasks": tasks,
        "cosines-by-round": cosines,
        "cosines": {pair: statistics.mean(v) for pair, v in sorted(cosines.items())},
        "uncertainty-weights": uncertainty_weights(run_dir),
    }


def run_cached(weighting: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Final metrics of one run, from the cache when it already ran."""
    overrides = {**BASE, **WEIGHTINGS[weighting], "seed": seed, "num-rounds": args.rounds}
    return cached_run(
        args.output_dir / "results" / f"{weighting}-seed{seed}.json",
        args.fresh,
        f"{weighting}, seed {seed}",
        EXPERIMENT,
        overrides,
        args.output_dir / "runs",
        lambda run: final_metrics(run.run_dir),
    )


def metrics_table(rows: dict[str, list[dict[str, Any]]], rounds: int) -> list[str]:
    """Per task mean / worst client (averaged over seeds) of every weighting."""
    seeds = len(next(iter(rows.values())))
    head = [f"{t} {PRIMARY[t]}" + (" (noisy)" if t == NOISY else "") for t in TASKS]
    lines = [
        f"Round {rounds}, every client holding {', '.join(TASKS)}; ge5 with 40% of its "
        f"training labels flipped (test labels clean). Mean over clients (± std over "
        f"{seeds} seeds) / worst client (mean over seeds; for MAE the highest):",
        "",
        "| weighting | " + " | ".join(head) + " |",
        "|---|" + "---:|" * len(TASKS),
    ]
    for weighting, runs in rows.items():
        cells = []
        for task in TASKS:
            means = [r["tasks"][task]["mean"] for r in runs]
            worst = statistics.mean(r["tasks"][task]["worst"] for r in runs)
            cells.append(f"{mean_spread(means)} / {worst:.3f}")
        lines.append(f"| {weighting} | {' | '.join(cells)} |")
    return [*lines, ""]


def cosine_table(rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Mean over rounds and seeds of the clients' task-gradient cosine per pair."""
    pairs = sorted({pair for runs in rows.values() for r in runs for pair in r["cosines"]})
    lines = [
        "Clients' task-gradient cosine on the shared parameters (mean over the 10 rounds, "
        "the clients and the seeds; first round / last round in brackets):",
        "",
        "| weighting | " + " | ".join(pairs) + " |",
        "|---|" + "---:|" * len(pairs),
    ]
    for weighting, runs in rows.items():
        cells = []
        for pair in pairs:
            series = [r["cosines-by-round"][pair] for r in runs if pair in r["cosines"]]
            mean = statistics.mean(r["cosines"][pair] for r in runs if pair in r["cosines"])
            first = statistics.mean(s[0] for s in series)
            final = statistics.mean(s[-1] for s in series)
            cells.append(f"{mean:+.3f} ({first:+.2f} / {final:+.2f})")
        lines.append(f"| {weighting} | {' | '.join(cells)} |")
    return [*lines, ""]


def weights_table(runs: list[dict[str, Any]]) -> list[str]:
    """The uncertainty weighting's final ``exp(-s_t)`` (mean over clients, per seed)."""
    found = [r["uncertainty-weights"] for r in runs if r["uncertainty-weights"]]
    if not found:
        return []
    cells = [" / ".join(f"{w[t]:.2f}" if t in w else "-" for w in found) for t in TASKS]
    return [
        "Uncertainty weighting's learned weights exp(-s_t) after the last round (mean over "
        "the clients; one value per seed):",
        "",
        "| " + " | ".join(TASKS) + " |",
        "|" + "---:|" * len(TASKS),
        "| " + " | ".join(cells) + " |",
        "",
    ]


def main() -> None:
    """Run every weighting on every seed; write the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weightings", nargs="+", choices=list(WEIGHTINGS), default=[*WEIGHTINGS])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--output-dir", type=Path, default=Path("bench-runs/task-weighting"))
    parser.add_argument("--fresh", action="store_true", help="rerun cached runs too")
    args = parser.parse_args()
    rows = {w: [run_cached(w, seed, args) for seed in args.seeds] for w in args.weightings}
    payload = {
        "experiment": EXPERIMENT,
        "rounds": args.rounds,
        "seeds": args.seeds,
        "tasks": TASKS,
        "label-noise": NOISE,
        "runs": rows,
    }
    lines = metrics_table(rows, args.rounds) + cosine_table(rows)
    if "uncertainty" in rows:
        lines += weights_table(rows["uncertainty"])
    write_results("task_weighting", payload, "\n".join(lines).rstrip())


if __name__ == "__main__":
    main()
