"""Clients holding 1, 2 or 3 tasks vs one model per task, on the same examples.

Runs simulations/digits_multitask.toml (tasks digit, parity, digit-value; 12
clients, Dirichlet alpha 1.0; backbone shared, each task's head averaged over
the clients holding that task; 10 rounds) with ``task-weighting = "equal"``
(so the arms differ in which tasks a client holds, not in how losses are
weighted) in five arms:

* ``1-task``: ``tasks-per-client = 1`` (round-robin: each task on 4 clients);
* ``2-tasks``: ``tasks-per-client = 2`` (each task on 8 clients);
* ``3-tasks``: ``tasks-per-client = 3`` (every client all tasks: one model);
* ``per-task``: for each task ``t`` its own federation, ``tasks = [t]`` on all 12
  clients (one backbone per task): three runs per seed.
* ``per-task-lr3``: ``per-task`` at a third of the learning rate. A client's
  objective is the mean of its tasks' losses (fedmtl/task_training.py), so with 3
  tasks each head's gradient, and each task's part of the backbone's, is a third
  of what it is alone: this control separates that smaller step from interference.

On digits the partition splits one shared pool by the base labels whatever
tasks a client holds, so client ``c`` has the same train and test examples in
every arm (checked by :func:`check_equal_data`): ``3-tasks`` vs ``per-task`` is
the equal-data comparison of one shared model against one model per task, and
``1-task`` -> ``2-tasks`` -> ``3-tasks`` shows what holding more tasks does
(each task sees more clients' data, but shares the backbone with more tasks).

Tabulates, per task, the final round's mean over the task's clients and the
worst client (accuracy; MAE for digit-value, where worst is highest), averaged
over seeds (± the std over seeds), once over all of a task's clients and once
over the 4 clients that hold it in every arm (so worst-of-4 is not compared
with worst-of-12); the run cost (wall time with Ray start-up, the rounds'
seconds, array bytes up + down, backbone example passes: per round each
client's training examples once, whatever tasks it trains on them); and for
the multi-task arms the mean over rounds of the clients' task-gradient cosines
(metrics.jsonl ``client-task-similarity``).

    python benchmarks/multitask_clients.py [--arms 1-task 3-tasks ...] [--seeds 0 1]

Writes results/multitask_clients.json and results/multitask_clients.md. A
finished run is not repeated: each (arm, run, seed) is cached in
``--output-dir`` (``--fresh`` ignores the cache).
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from common import cached_run, mean_spread, write_results

from fedmtl.config.experiments import load_experiment
from fedmtl.config.views import partition_spec
from fedmtl.data.federation import build_federation
from fedmtl.metrics import lower_is_better, primary_metric
from fedmtl.results import RoundRecord, RunDirectory
from fedmtl.results.similarity import client_pairs, mean_task_similarity

EXPERIMENT = "digits_multitask"
TASKS = ["digit", "parity", "digit-value"]
BASE: dict[str, Any] = {"task-weighting": "equal"}
#: The experiment's learning rate (the control arm divides it by the number of tasks).
LR = load_experiment(EXPERIMENT).learning_rate
#: arm -> (description, [(part name, overrides)]): one run per part and seed.
ARMS: dict[str, tuple[str, list[tuple[str, dict[str, Any]]]]] = {
    "1-task": ("1 task / client", [("all", {"tasks-per-client": 1})]),
    "2-tasks": ("2 tasks / client", [("all", {"tasks-per-client": 2})]),
    "3-tasks": ("3 tasks / client (one model)", [("all", {"tasks-per-client": 3})]),
    "per-task": (
        "one model per task",
        [(task, {"tasks": [task], "tasks-per-client": 1}) for task in TASKS],
    ),
    "per-task-lr3": (
        "one model per task, lr / 3",
        [
            (task, {"tasks": [task], "tasks-per-client": 1, "learning-rate": LR / len(TASKS)})
            for task in TASKS
        ],
    ),
}


def overrides_for(arm: str, part: str, seed: int, rounds: int) -> dict[str, Any]:
    """The experiment overrides of one run of ``arm``."""
    extra = dict(ARMS[arm][1])[part]
    return {**BASE, **extra, "seed": seed, "num-rounds": rounds}


def check_equal_data(seed: int, arms: list[str]) -> None:
    """Raise unless every client has the same train/test inputs in every run of ``arms``."""
    reference: list[tuple[Any, Any]] | None = None
    for arm in arms:
        for part, _ in ARMS[arm][1]:
            cfg = load_experiment(EXPERIMENT, overrides_for(arm, part, seed, 1))
            clients = build_federation(partition_spec(cfg))
            inputs = [(c[0].x_train, c[0].x_test) for c in clients]
            same = all(
                np.array_equal(p.x_train, c[0].x_train) and np.array_equal(p.x_test, c[0].x_test)
                for c in clients
                for p in c
            )
            if reference is None:
                reference = inputs
            elif not same or len(inputs) != len(reference):
                raise RuntimeError(f"{arm}/{part}, seed {seed}: clients' tasks differ in data")
            else:
                for (a, b), (ra, rb) in zip(inputs, reference, strict=True):
                    if not (np.array_equal(a, ra) and np.array_equal(b, rb)):
                        raise RuntimeError(f"{arm}/{part}, seed {seed}: data differs from others")


def _example_passes(records: list[RoundRecord]) -> int:
    """Training examples seen by the backbone: per round, each client's examples once."""
    total = 0
    for record in records:
        if not record.is_training_round:
            continue
        per_client: dict[int, int] = defaultdict(int)
        for row in record.train.clients:
            examples = int(row.metrics.get("num-examples", 0))
            per_client[row.client_id] = max(per_client[row.client_id], examples)
        total += sum(per_client.values())
    return total


def final_metrics(run_dir: Path) -> dict[str, Any]:
    """Final-round per-client values of each task's primary metric, costs and cosines."""
    run = RunDirectory(run_dir)
    records = list(run.rounds())
    last = records[-1].evaluate
    tasks: dict[str, dict[str, Any]] = {}
    for task, stats in last.tasks.items():
        metric = primary_metric(stats)
        values = {
            str(row.client_id): float(row.metrics[metric])
            for row in last.clients
            if row.task == task
        }
        tasks[task] = {"metric": metric, "clients": values}
    cosines = mean_task_similarity(records, client_pairs)
    return {
        "tasks": tasks,
        "rounds-s": sum(r.round_s or 0.0 for r in records),
        "bytes": sum((r.bytes_up or 0) + (r.bytes_down or 0) for r in records),
        "example-passes": _example_passes(records),
        "cosines": {f"{a}/{b}": value for (a, b), value in cosines.items()},
    }


def run_cached(arm: str, part: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Final-round metrics of one run, from the cache when it already ran."""
    return cached_run(
        args.output_dir / "results" / f"{arm}-{part}-seed{seed}.json",
        args.fresh,
        f"{arm}, {part}, seed {seed}",
        EXPERIMENT,
        overrides_for(arm, part, seed, args.rounds),
        args.output_dir / "runs",
        lambda run: final_metrics(run.run_dir),
    )


def merge_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One seed of an arm: its runs' tasks and cosines together, their costs summed."""
    merged: dict[str, Any] = {"tasks": {}, "cosines": {}, "runs": len(parts)}
    for key in ("wall-s", "rounds-s", "bytes", "example-passes"):
        merged[key] = sum(part[key] for part in parts)
    for part in parts:
        merged["tasks"].update(part["tasks"])
        merged["cosines"].update(part["cosines"])
    return merged


def _worst(metric: str, values: list[float]) -> float:
    return max(values) if lower_is_better(metric) else min(values)


def task_summary(entry: dict[str, Any], clients: set[str] | None = None) -> tuple[float, float]:
    """Mean over clients and worst client of one task (over ``clients`` when given)."""
    values = [v for c, v in entry["clients"].items() if clients is None or c in clients]
    return statistics.mean(values), _worst(entry["metric"], values)


def common_clients(rows: dict[str, list[dict[str, Any]]], task: str, seed: int) -> set[str]:
    """The clients holding ``task`` in every arm (for seed index ``seed``)."""
    held = [set(runs[seed]["tasks"][task]["clients"]) for runs in rows.values()]
    return set.intersection(*held)


def accuracy_table(rows: dict[str, list[dict[str, Any]]], rounds: int, common: bool) -> list[str]:
    """Per task ``mean ± std / worst`` averaged over seeds (over all holders or common ones)."""
    seeds = len(next(iter(rows.values())))
    metrics = {t: next(iter(rows.values()))[0]["tasks"][t]["metric"] for t in TASKS}
    scope = (
        "the 4 clients holding the task in every arm"
        if common
        else "all the clients holding the task"
    )
    lines = [
        f"Round {rounds}, over {scope}: mean over clients ± std over seeds / worst client, "
        f"averaged over {seeds} seeds:",
        "",
        "| arm | clients per task | "
        + " | ".join(f"{t} {metrics[t]}" for t in TASKS)
        + " | mean accuracy (classification) |",
        "|---|---:|" + "---:|" * (len(TASKS) + 1),
    ]
    for arm, runs in rows.items():
        cells = []
        accuracy: list[list[float]] = [[] for _ in runs]
        for task in TASKS:
            means, worsts = [], []
            for index, run in enumerate(runs):
                chosen = common_clients(rows, task, index) if common else None
                mean, worst = task_summary(run["tasks"][task], chosen)
                means.append(mean)
                worsts.append(worst)
                if not lower_is_better(metrics[task]):
                    accuracy[index].append(mean)
            cells.append(f"{mean_spread(means)} / {statistics.mean(worsts):.3f}")
        sizes = sorted({len(run["tasks"][t]["clients"]) for run in runs for t in TASKS})
        count = "4" if common else "/".join(str(s) for s in sizes)
        overall = mean_spread([statistics.mean(a) for a in accuracy])
        lines.append(f"| {ARMS[arm][0]} | {count} | {' | '.join(cells)} | {overall} |")
    return [*lines, ""]


def cost_table(rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Runs, wall time, round seconds, bytes and example passes per seed (mean over seeds)."""
    lines = [
        "Cost per seed (mean over seeds): wall s includes each run's Ray start-up; round s "
        "is the rounds' own time (training and evaluation); example passes: per round, "
        "each client's training examples once (its tasks share one backbone pass).",
        "",
        "| arm | runs | wall s | round s | MB up + down | example passes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for arm, runs in rows.items():
        wall = statistics.mean(r["wall-s"] for r in runs)
        rounds_s = statistics.mean(r["rounds-s"] for r in runs)
        megabytes = statistics.mean(r["bytes"] for r in runs) / 1e6
        passes = statistics.mean(r["example-passes"] for r in runs)
        lines.append(
            f"| {ARMS[arm][0]} | {runs[0]['runs']} | {wall:.0f} | {rounds_s:.0f} | "
            f"{megabytes:.1f} | {passes:.0f} |"
        )
    return [*lines, ""]


def cosine_table(rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Mean client task-gradient cosine per pair (over rounds, then seeds ± std)."""
    found = {p for runs in rows.values() for r in runs for p in r["cosines"]}
    ordered = ["/".join(sorted((a, b))) for i, a in enumerate(TASKS) for b in TASKS[i + 1 :]]
    pairs = [p for p in ordered if p in found] + sorted(found - set(ordered))
    if not pairs:
        return []
    lines = [
        "Clients' task-gradient cosines on the shared backbone (mean over clients holding both "
        "and over rounds 1..N; ± std over seeds):",
        "",
        "| arm | " + " | ".join(p.replace("/", " vs ") for p in pairs) + " |",
        "|---|" + "---:|" * len(pairs),
    ]
    for arm, runs in rows.items():
        if not any(r["cosines"] for r in runs):
            continue
        cells = [
            mean_spread([r["cosines"][p] for r in runs if p in r["cosines"]])
            if any(p in r["cosines"] for r in runs)
            else "-"
            for p in pairs
        ]
        lines.append(f"| {ARMS[arm][0]} | {' | '.join(cells)} |")
    return [*lines, ""]


def main() -> None:
    """Run every arm and seed; write the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--output-dir", type=Path, default=Path("bench-runs/multitask-clients"))
    parser.add_argument("--fresh", action="store_true", help="rerun cached runs too")
    args = parser.parse_args()
    for seed in args.seeds:
        check_equal_data(seed, args.arms)
    rows = {
        arm: [
            merge_parts([run_cached(arm, part, seed, args) for part, _ in ARMS[arm][1]])
            for seed in args.seeds
        ]
        for arm in args.arms
    }
    payload: dict[str, Any] = {
        "experiment": EXPERIMENT,
        "overrides": BASE,
        "rounds": args.rounds,
        "seeds": args.seeds,
        "arms": {arm: {"description": ARMS[arm][0], "seeds": rows[arm]} for arm in args.arms},
    }
    lines = [
        f"**Clients holding 1, 2 or 3 tasks vs one model per task** ({EXPERIMENT}, "
        'task-weighting = "equal"; every client has the same examples in every arm)',
        "",
        *accuracy_table(rows, args.rounds, common=False),
        *accuracy_table(rows, args.rounds, common=True),
        *cost_table(rows),
        *cosine_table(rows),
    ]
    write_results("multitask_clients", payload, "\n".join(lines).rstrip())


if __name__ == "__main__":
    main()
