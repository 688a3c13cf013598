"""Up to 10,000 clients on one small machine: wall time per round and peak memory.

The MiniLM workload (simulations/text_minilm.toml: frozen pretrained encoder,
heads averaged per task) with 100, 1,000 and 10,000 clients, IID, 10% of the
clients sampled per round, a fixed seeded panel of 100 clients evaluated every
round, client state on disk (``client-state = "disk"``) and the features in a
disk cache.

The data is the same shape at every size, so that what grows is what the number
of clients costs: every client holds ``PER_CLIENT`` = 8 texts (6 train, 2 test,
``test-fraction = 0.25``) of one task. The three tasks of ``wordnet-fortunes``
hold 82,115 / 13,767 / 8,549 texts, so at 10,000 clients an even round-robin
split would leave verb and fortune clients 4 and 2 texts each; clients are
assigned to tasks in proportion to what the data holds instead (``task-assignment
= "counts"``: 80% noun-supersense, 12% verb-supersense, 8% fortune-topic), and
``max-examples-per-task`` takes ``8 x`` that task's clients. So the rows differ
in the number of clients (and the texts they hold, 8 each), not in the per-client
work; every client is a real partition of real texts.

Memory is sampled every 0.5 s from the whole process tree of ``fedmtl
simulate``: the driver (ServerApp, Flower's simulation engine), Ray's own
processes (GCS, raylet, ...) and the client workers, reported in all and per
group; the ratios between rows show what grows with the number of clients.

    python benchmarks/scale.py [--clients 100 1000 10000] [--rounds 5]

Writes results/scale.json and results/scale.md (rows already measured are
kept in ``<output-dir>/rows/``; ``--fresh`` measures them again).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from common import ROOT, TreeMemory, measured_run, write_results

from fedmtl.results import latest_run, toml_value

EXPERIMENT = "text_minilm"
PER_CLIENT = 8
#: Share of the clients per task (what the data holds allows 8 texts each at 10,000).
TASK_SHARES = {"noun-supersense": 80, "verb-supersense": 12, "fortune-topic": 8}
PANEL = 100


def task_counts(clients: int) -> dict[str, int]:
    """Clients per task: ``TASK_SHARES`` percent each, the remainder to the first task."""
    counts = {task: clients * share // 100 for task, share in TASK_SHARES.items()}
    first = next(iter(counts))
    counts[first] += clients - sum(counts.values())
    return counts


def overrides(clients: int, rounds: int, output: Path) -> dict[str, Any]:
    """One scale run: 10% trained per round, a 100-client evaluation panel, 8 texts a client."""
    counts = task_counts(clients)
    return {
        "num-clients": clients,
        "tasks": list(TASK_SHARES),
        "task-assignment": "counts",
        "task-counts": counts,
        "partitioner": "iid",
        "max-examples-per-task": PER_CLIENT * max(counts.values()),
        "test-fraction": 0.25,
        "fraction-train": 0.1,
        "evaluate-panel": min(PANEL, clients),
        "num-rounds": rounds,
        "local-epochs": 1,
        "client-state": "disk",
        "feature-cache": "disk",
        "feature-cache-dir": str((output / "feature-cache").resolve()),
    }


def process_group(process: psutil.Process) -> str:
    """``driver``, ``client workers`` or ``ray services`` (GCS, raylet, dashboard, ...)."""
    try:
        line = " ".join(process.cmdline())
    except psutil.Error:
        return "ray services"
    if "ClientAppActor" in line or "default_worker.py" in line or "ray::" in line:
        return "client workers"
    return "ray services"


def _stop_tree(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process`` and every process under it (this run's own, by pid)."""
    try:
        tree = [*psutil.Process(process.pid).children(recursive=True)]
    except psutil.Error:
        tree = []
    for child in [psutil.Process(process.pid), *tree]:
        try:
            child.terminate()
        except psutil.Error:
            continue
    psutil.wait_procs(tree, timeout=10)
    process.wait()


def _unfinished(
    clients: int, output: Path, wall: float, memory: TreeMemory, timeout_s: float
) -> dict[str, Any]:
    """The row of a run stopped at ``timeout_s``: the rounds it recorded, its peak memory."""
    from fedmtl.results import METRICS_FILE, read_rounds

    metrics = latest_run(output) / METRICS_FILE
    records = read_rounds(metrics) if metrics.exists() else []
    mib = 2**20
    return {
        "clients": clients,
        "completed": False,
        "stopped-after-s": round(timeout_s),
        "wall-s": round(wall, 1),
        "round-s": [round(r.round_s or 0.0, 2) for r in records],
        "peak-rss-total-mb": round(memory.peak_total / mib),
        "peak-rss-by-group-mb": {g: round(v / mib) for g, v in sorted(memory.peak_groups.items())},
    }


def measure(
    clients: int, rounds: int, output: Path, timeout_s: float | None = None
) -> dict[str, Any]:
    """Run one client count in its own ``fedmtl simulate`` process; its row.

    A run still going after ``timeout_s`` is stopped; its row says how far it got.
    """
    settings = {**overrides(clients, rounds, output), "output-dir": str(output.resolve())}
    command = [sys.executable, "-m", "fedmtl", "simulate", EXPERIMENT]
    for key, value in settings.items():
        command += ["--set", f"{key}={toml_value(value)}"]
    shutil.rmtree(output, ignore_errors=True)  # no features cached by an earlier run
    output.mkdir(parents=True)
    log = output / f"log-{clients}.txt"
    start = time.perf_counter()
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        with TreeMemory(process.pid, group_of=process_group) as memory:
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _stop_tree(process)
    wall = time.perf_counter() - start
    ray = Path(sys.executable).parent / "ray"
    subprocess.run([str(ray), "stop", "--force"], capture_output=True, check=False)
    if process.returncode != 0 and timeout_s is not None and wall >= timeout_s:
        return _unfinished(clients, output, wall, memory, timeout_s)
    if process.returncode != 0:
        sys.stdout.write(log.read_text(errors="replace")[-4000:])
        raise RuntimeError(f"{clients} clients failed with exit code {process.returncode}")
    run = measured_run(latest_run(output), wall, memory)  # type: ignore[arg-type]
    seconds = run.round_seconds()
    final = run.final_tasks()
    mib = 2**20
    return {
        "clients": clients,
        "completed": True,
        "task-counts": task_counts(clients),
        "texts-per-client": PER_CLIENT,
        "wall-s": round(wall, 1),
        "outside-rounds-s": round(wall - sum(seconds), 1),
        "round-s": [round(s, 2) for s in seconds],
        "round-0-s": round(seconds[0], 1),
        "rounds-1+-mean-s": round(sum(seconds[1:]) / max(len(seconds) - 1, 1), 2),
        "rounds-1+-max-s": round(max(seconds[1:], default=0.0), 2),
        "peak-rss-total-mb": round(memory.peak_total / mib),
        "peak-rss-process-mb": round(memory.peak_process / mib),
        "peak-rss-by-group-mb": {g: round(v / mib) for g, v in sorted(memory.peak_groups.items())},
        "processes": memory.peak_processes,
        "trained-clients-per-round": len({r.client_id for r in run.records[1].train.clients}),
        "evaluated-clients-per-round": len({r.client_id for r in run.records[-1].evaluate.clients}),
        "distinct-clients-trained": len(
            {r.client_id for record in run.records for r in record.train.clients}
        ),
        "client-state-files": sum(1 for _ in (run.run_dir / "client-state").rglob("*.npz")),
        "final-accuracy-mean": {t: round(s["accuracy-mean"], 3) for t, s in final.items()},
        "run-dir": str(run.run_dir),
    }


def growth(rows: list[dict[str, Any]]) -> list[str]:
    """How time per round and memory grow from each row to the next."""
    lines = []
    for small, large in itertools.pairwise(rows):
        factor = large["clients"] / small["clients"]
        per_round = large["rounds-1+-mean-s"] / max(small["rounds-1+-mean-s"], 1e-9)
        memory = large["peak-rss-total-mb"] / max(small["peak-rss-total-mb"], 1)
        lines.append(
            f"- {small['clients']:,} -> {large['clients']:,} clients ({factor:.0f}x): time per "
            f"later round {per_round:.1f}x, peak memory of all processes {memory:.2f}x "
            f"(+{large['peak-rss-total-mb'] - small['peak-rss-total-mb']:,} MB)."
        )
    return lines


def main() -> None:
    """Run each client count (reusing measured rows) and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", nargs="+", type=int, default=[100, 1000, 10000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output-dir", type=Path, default=Path("bench-runs/scale"))
    parser.add_argument("--fresh", action="store_true", help="measure every row again")
    parser.add_argument("--only", action="store_true", help="measure, do not write results")
    parser.add_argument("--timeout-s", type=float, help="stop a run after this long")
    args = parser.parse_args()
    rows = []
    for clients in args.clients:
        cache = args.output_dir / "rows" / f"{clients}-{args.rounds}.json"
        if cache.exists() and not args.fresh:
            rows.append(json.loads(cache.read_text()))
            continue
        print(f"running: {clients} clients", flush=True)
        row = measure(clients, args.rounds, args.output_dir / str(clients), args.timeout_s)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(row, indent=1) + "\n")
        rows.append(row)
    if args.only:
        return
    lines = [
        f"MiniLM frozen, IID, {PER_CLIENT} texts per client (6 train + 2 test), 10% of the "
        f"clients trained per round, a {PANEL}-client evaluation panel, {args.rounds} rounds, "
        "client state and features on disk, 2 CPU cores, 24 GiB:",
        "",
        "| clients | wall s | outside rounds s | round 0 s | later rounds mean / max s "
        "| peak RSS all processes MB | driver / Ray services / client workers MB "
        "| trained / evaluated clients per round |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        groups = row["peak-rss-by-group-mb"]
        if not row.get("completed", True):
            lines.append(
                f"| {row['clients']:,} | stopped at {row['stopped-after-s']} s "
                f"| | rounds recorded: {row['round-s']} | | {row['peak-rss-total-mb']:,} "
                f"| {groups.get('driver', 0):,} / {groups.get('ray services', 0):,} / "
                f"{groups.get('client workers', 0):,} | |"
            )
            continue
        lines.append(
            f"| {row['clients']:,} | {row['wall-s']} | {row['outside-rounds-s']} "
            f"| {row['round-0-s']} | {row['rounds-1+-mean-s']} / {row['rounds-1+-max-s']} "
            f"| {row['peak-rss-total-mb']:,} "
            f"| {groups.get('driver', 0):,} / {groups.get('ray services', 0):,} / "
            f"{groups.get('client workers', 0):,} "
            f"| {row['trained-clients-per-round']} / {row['evaluated-clients-per-round']} |"
        )
    lines += ["", *growth([row for row in rows if row.get("completed", True)])]
    write_results("scale", {"rounds": args.rounds, "runs": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
