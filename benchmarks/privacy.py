"""Privacy-utility of client-level central DP: accuracy against epsilon, and the clients it needs.

Runs ``dp = "central"`` (fedmtl/privacy.py: the server clips each client's whole
update, shared and task scope together, to ``dp-clip`` = C, and adds Gaussian
noise of std ``z C / n`` to each aggregate of n replies; epsilon from Flower's
RDP accountant, replace-one neighbours, every client sampled every round) on

* ``digits`` (simulations/digits.toml: 12 clients, 3 tasks, backbone shared,
  heads local) with one change in every arm: the batch-norm running statistics
  stay on the clients (``scope-local`` adds ``"*.running_*"``). DP refuses them
  in the shared scope (``check_private_scopes``): noised like every other entry,
  a running variance below 0 made every evaluation non-finite (measured before
  the refusal: ``dp-epsilon = 8``, C = 1, all evaluation replies rejected from
  round 1 on);
* ``text-minilm`` (simulations/text_minilm.toml: 12 clients, 3 text tasks,
  frozen MiniLM, each task's head averaged over its 4 clients: each task
  aggregate has n = 4).

Arms, all with ``client-weighting = "uniform"`` (what the accounting needs) and
the same rounds: ``plain`` (no clipping, no noise: epsilon infinite),
``clip-only`` (clip C, noise 0: what the clipping alone costs), and
``dp-epsilon`` 8, 4, 1 (z solved by the accountant for that epsilon after the
run's rounds, delta 1e-5). The noise is drawn from the run's seed
(``dp-seeded-noise = true``) so that a rerun repeats a row; that makes the noise
public, so these runs are experiments, not private deployments.

C is chosen before any DP run, the same for every epsilon: the median over the
clients of the L2 norm of their round-1 update (shared + task arrays) from the
initial model, measured in-process by the ClientApp's own train handler with
the experiment's seed 0 (:func:`first_round_norms`). Nothing is tuned on the
test results.

A scaling arm runs digits with more clients at epsilon 8 (and clip-only): the
1,797 images (70% after the pretraining split, 25% of that held out per client
for test) are spread over ``num-clients`` 48 and 120, so each client holds
fewer examples (about 20 and 8 train images): more clients make the noise
smaller (std z C / n) but each client's data smaller too. Its C is measured
again at that N by the same rule. Finally a table computed from the
accountant alone (no training): the z that epsilon 1 / 4 / 8 needs after the
rounds at N clients, with every client every round and with 10% sampled,
and the noise this gives each aggregate, per entry (z C / n) and over the
shared arrays (z C sqrt(d) / n, against at most C of a client's update).

    python benchmarks/privacy.py [--experiments digits text-minilm] [--seeds 0 1]

Writes results/privacy.json and results/privacy.md. A finished run is not
repeated: each (experiment, arm, seed) is cached in ``--output-dir`` (and the
measured clips too; ``--fresh`` ignores the cache).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, cached_run, mean_spread, write_results

from fedmtl.results import RunDirectory

EPSILONS = [8.0, 4.0, 1.0]
DELTA = 1e-5
DIGITS_LOCAL = ["heads.*", "*.num_batches_tracked", "*.running_*"]
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "digits": {"file": "simulations/digits.toml", "overrides": {"scope-local": DIGITS_LOCAL}},
    "text-minilm": {"file": "simulations/text_minilm.toml", "overrides": {}},
}
UNIFORM = {"client-weighting": "uniform"}
SCALING_CLIENTS = [48, 120]
SHARED_ENTRIES = 13_152  # digits-cnn's shared backbone without its running statistics
RAY_LOCK = Path("/tmp/ray.lock")  # held per run: a run's `ray stop --force` ends any other


@contextlib.contextmanager
def ray_lock() -> Iterator[None]:
    """Hold ``RAY_LOCK`` (flock) while one simulation runs."""
    with RAY_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def arms(clip: float) -> dict[str, dict[str, Any]]:
    """The arms of one experiment at clip ``clip``."""
    private = {"dp": "central", "dp-clip": clip, "dp-seeded-noise": True, "dp-delta": DELTA}
    return {
        "plain": {},
        "clip-only": {**private, "dp-noise-multiplier": 0.0},
        **{f"eps-{e:g}": {**private, "dp-epsilon": e} for e in EPSILONS},
    }


# --- the clip: median round-1 update norm, measured in a child process -------------------

_NORMS_CODE = r"""
import json, sys
import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from fedmtl.client_app import client_setup, handle_train
from fedmtl.config.experiments import load_experiment
from fedmtl.models.state import export_arrays
from fedmtl.records import ARRAYS, CONFIG, TASK_ARRAYS, Instruction, from_record, to_record
from fedmtl.run_model import initial_model

experiment, overrides = sys.argv[1], json.loads(sys.argv[2])
cfg = load_experiment(experiment, overrides)
# Pretend to be inside a ServerApp so that Message(...) can fill its metadata.
TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = 1, 1, 1
model = initial_model(cfg)
norms = []
for client in range(cfg.num_clients):
    keys = client_setup(cfg, client).keys
    shared = export_arrays(model, keys.shared)
    task = export_arrays(model, keys.task)
    content = RecordDict({ARRAYS: to_record(shared), CONFIG: Instruction(server_round=1).encode()})
    if task:
        content[TASK_ARRAYS] = to_record(task)
    msg = Message(content, dst_node_id=5, message_type=MessageType.TRAIN)
    context = Context(run_id=1, node_id=5, node_config={"partition-id": client},
                      state=RecordDict(), run_config={})
    reply = handle_train(msg, context, cfg).content
    sent = {**shared, **task}
    got = from_record(reply.array_records[ARRAYS])
    if TASK_ARRAYS in reply.array_records:
        got.update(from_record(reply.array_records[TASK_ARRAYS]))
    norms.append(float(np.sqrt(sum(np.sum((got[k] - sent[k]).astype(np.float64) ** 2)
                                   for k in sent))))
print(json.dumps(norms))
"""


def first_round_norms(experiment: str, overrides: dict[str, Any]) -> list[float]:
    """Each client's L2 update norm (shared + task arrays) in round 1, from the initial model.

    The ClientApp's train handler runs in a child process (no Ray), once per client,
    with the run's settings: the update a DP run's server would clip in round 1.
    """
    done = subprocess.run(
        [sys.executable, "-c", _NORMS_CODE, experiment, json.dumps(overrides)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"measuring update norms failed:\n{done.stderr[-3000:]}")
    return [float(v) for v in json.loads(done.stdout.strip().splitlines()[-1])]


def measured_clip(name: str, overrides: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The median round-1 update norm (rounded to 2 significant digits) and the norms, cached."""
    label = f"{name}-{overrides.get('num-clients', 12)}"
    cache = args.output_dir / "clips" / f"{label}.json"
    if cache.exists() and not args.fresh:
        return dict(json.loads(cache.read_text()))
    print(f"measuring round-1 update norms: {label}", flush=True)
    settings = {**EXPERIMENTS[name]["overrides"], **UNIFORM, **overrides, "seed": 0}
    settings["output-dir"] = str((args.output_dir / "runs" / name).resolve())  # feature cache
    norms = first_round_norms(EXPERIMENTS[name]["file"], settings)
    median = statistics.median(norms)
    row = {
        "clip": float(f"{median:.2g}"),
        "median": median,
        "min": min(norms),
        "max": max(norms),
        "norms": norms,
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(row, indent=1))
    return row


# --- runs -------------------------------------------------------------------------------


def final_metrics(run_dir: Path) -> dict[str, Any]:
    """Final-round accuracy mean / worst client per task, epsilon and z of the run."""
    run = RunDirectory(run_dir)
    rounds = run.rounds()
    last = rounds[-1].evaluate.tasks
    privacy = rounds[-1].privacy or {}
    tasks = {
        task: {
            "mean": stats.get("accuracy-mean"),
            "worst": stats.get("accuracy-worst"),
            "num-clients": stats.get("num-clients"),
        }
        for task, stats in last.items()
    }
    epsilon = privacy.get("epsilon")
    return {
        "tasks": tasks,
        "evaluated-clients": len(rounds[-1].evaluate.clients),
        "epsilon": epsilon if epsilon is not None and math.isfinite(epsilon) else None,
        "noise-multiplier": privacy.get("noise-multiplier"),
        "clip": privacy.get("clip"),
    }


def run_cached(
    name: str, arm: str, overrides: dict[str, Any], seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Final metrics of one run, from the cache when it already ran."""
    clients = overrides.get("num-clients", 12)
    settings = {
        **EXPERIMENTS[name]["overrides"],
        **UNIFORM,
        **overrides,
        "seed": seed,
        "num-rounds": args.rounds,
    }
    cache = args.output_dir / "results" / f"{name}-{clients}-{arm}-seed{seed}.json"
    with contextlib.nullcontext() if cache.exists() and not args.fresh else ray_lock():
        return cached_run(
            cache,
            args.fresh,
            f"{name}, {clients} clients, {arm}, seed {seed}",
            EXPERIMENTS[name]["file"],
            settings,
            args.output_dir / "runs" / name,  # one output dir per experiment: the feature cache
            lambda run: final_metrics(run.run_dir),
        )


def cell(runs: list[dict[str, Any]], task: str) -> str:
    """``mean ± std over seeds / worst client (mean over seeds)``; ``-`` with no evaluation.

    Clients whose evaluation was non-finite are rejected and missing from the task's
    statistics: a seed without any finite client of ``task`` is left out (``k/n seeds``).
    """
    means = [r["tasks"][task]["mean"] for r in runs if task in r["tasks"]]
    worst = [r["tasks"][task]["worst"] for r in runs if task in r["tasks"]]
    if not means:
        return "non-finite"
    text = f"{mean_spread(means)} / {statistics.mean(worst):.3f}"
    return text if len(means) == len(runs) else f"{text} ({len(means)}/{len(runs)} seeds)"


def finite_share(runs: list[dict[str, Any]], clients: int) -> str:
    """Clients with a finite final evaluation, over all seeds."""
    return f"{sum(r['evaluated-clients'] for r in runs)}/{clients * len(runs)}"


def accuracy_table(
    name: str, clip: dict[str, Any], rows: dict[str, list[dict[str, Any]]], rounds: int
) -> list[str]:
    """One experiment's arms: z, epsilon, accuracy mean / worst per task."""
    tasks = sorted({t for runs in rows.values() for r in runs for t in r["tasks"]})
    seeds = len(next(iter(rows.values())))
    lines = [
        f"**{name}**, {rounds} rounds, 12 clients, uniform weighting, central DP, delta "
        f"{DELTA:g}; clip C = {clip['clip']:g} (median round-1 update norm "
        f"{clip['median']:.3g}, range {clip['min']:.3g}-{clip['max']:.3g}). Final accuracy: "
        f"mean over clients (± std over {seeds} seeds) / worst client (mean over seeds):",
        "",
        "| arm | epsilon | z | finite clients | " + " | ".join(tasks) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(tasks),
    ]
    for arm, runs in rows.items():
        first = runs[0]
        epsilon = "inf" if first["epsilon"] is None else f"{first['epsilon']:.3g}"
        z = first["noise-multiplier"]
        z_cell = "-" if z is None else f"{z:.3g}"
        cells = [cell(runs, t) for t in tasks]
        finite = finite_share(runs, 12)
        lines.append(f"| {arm} | {epsilon} | {z_cell} | {finite} | {' | '.join(cells)} |")
    return [*lines, ""]


def scaling_table(
    rows: dict[int, dict[str, list[dict[str, Any]]]], clips: dict[int, dict[str, Any]], rounds: int
) -> list[str]:
    """Digits at 12 / 48 / 120 clients: clip-only and epsilon 8."""
    tasks = sorted(
        {t for arms_ in rows.values() for rs in arms_.values() for r in rs for t in r["tasks"]}
    )
    lines = [
        f"**digits, more clients** ({rounds} rounds; the same 1,797 images spread over more "
        "clients, so each holds fewer; at 120 a client tests on about 3 images, so its worst "
        "client is 0 or near): clip C re-measured at each N (median round-1 update norm); "
        "clip-only (epsilon inf) vs epsilon 8, mean / worst:",
        "",
        "| clients | train images / client | C | z | noise std per entry z C / n | arm | "
        + "finite clients | "
        + " | ".join(tasks)
        + " |",
        "|---:|---:|---:|---:|---:|---|---:|" + "---:|" * len(tasks),
    ]
    for clients, arms_ in rows.items():
        for arm, runs in arms_.items():
            z = runs[0]["noise-multiplier"] or 0.0
            clip = clips[clients]["clip"]
            per_client = clips[clients].get("train-per-client", "-")
            lines.append(
                f"| {clients} | {per_client} | {clip:g} | {z:.3g} | {z * clip / clients:.3g} | "
                f"{arm} | {finite_share(runs, clients)} | "
                f"{' | '.join(cell(runs, t) for t in tasks)} |"
            )
    return [*lines, ""]


def accountant_table(rounds: int, shared_entries: int) -> list[str]:
    """The z each epsilon needs at N clients and the noise each aggregate gets (no training)."""
    from fedmtl.privacy import solve_noise_multiplier

    lines = [
        f"**What the accountant asks** ({rounds} rounds, delta {DELTA:g}, replace-one; no "
        "training): z for the target epsilon with n of N clients sampled each round, and "
        "the noise of each aggregate in units of C: per entry z / n, and over the "
        f"{shared_entries:,} shared entries of digits-cnn z sqrt(d) / n (a client's update "
        "is at most 1):",
        "",
        "| N | n per round | epsilon | z | noise per entry z/n | noise norm z sqrt(d)/n |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for population in [12, 48, 120, 1_000, 10_000, 100_000]:
        for sample in sorted({population, max(1, population // 10)}, reverse=True):
            for epsilon in EPSILONS:
                z = solve_noise_multiplier(epsilon, rounds, sample, population, DELTA)
                lines.append(
                    f"| {population:,} | {sample:,} | {epsilon:g} | {z:.3g} | {z / sample:.2g} | "
                    f"{z * math.sqrt(shared_entries) / sample:.2g} |"
                )
    return [*lines, ""]


def train_per_client(clients: int) -> float:
    """Mean train examples per client of digits at ``clients`` clients."""
    from fedmtl.config.experiments import load_experiment
    from fedmtl.config.views import partition_spec
    from fedmtl.data.federation import client_tasks

    cfg = load_experiment(ROOT / EXPERIMENTS["digits"]["file"], {"num-clients": clients})
    spec = partition_spec(cfg)
    sizes = [sum(d.num_train for d in client_tasks(spec, c)) for c in range(clients)]
    return float(np.mean(sizes))


def main() -> None:
    """Measure the clips, run every arm on every seed, write the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--experiments", nargs="+", choices=list(EXPERIMENTS), default=[*EXPERIMENTS]
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-scaling", action="store_true", help="skip the 48 / 120 client arm")
    parser.add_argument("--output-dir", type=Path, default=Path("bench-runs/privacy"))
    parser.add_argument("--fresh", action="store_true", help="rerun cached runs too")
    args = parser.parse_args()
    payload: dict[str, Any] = {"rounds": args.rounds, "seeds": args.seeds, "delta": DELTA}
    lines: list[str] = []
    for name in args.experiments:
        clip = measured_clip(name, {}, args)
        rows = {
            arm: [run_cached(name, arm, o, s, args) for s in args.seeds]
            for arm, o in arms(clip["clip"]).items()
        }
        payload[name] = {"clip": clip, "runs": rows}
        lines += accuracy_table(name, clip, rows, args.rounds)
    if "digits" in args.experiments and not args.no_scaling:
        clips: dict[int, dict[str, Any]] = {12: payload["digits"]["clip"]}
        scaled: dict[int, dict[str, list[dict[str, Any]]]] = {
            12: {a: payload["digits"]["runs"][a] for a in ("clip-only", "eps-8")}
        }
        for clients in SCALING_CLIENTS:
            clips[clients] = measured_clip("digits", {"num-clients": clients}, args)
            chosen = arms(clips[clients]["clip"])
            scaled[clients] = {
                a: [
                    run_cached("digits", a, {**chosen[a], "num-clients": clients}, s, args)
                    for s in args.seeds
                ]
                for a in ("clip-only", "eps-8")
            }
        for clients in clips:
            clips[clients]["train-per-client"] = round(train_per_client(clients))
        payload["scaling"] = {"clips": clips, "runs": scaled}
        lines += scaling_table(scaled, clips, args.rounds)
    lines += accountant_table(args.rounds, SHARED_ENTRIES)
    write_results("privacy", payload, "\n".join(lines).rstrip())


if __name__ == "__main__":
    main()
