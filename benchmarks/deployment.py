"""What a real deployment costs next to a simulation of the same federation.

Runs ``fedmtl deploy local`` (real flower-superlink, flower-supernode and flwr
run processes on 127.0.0.1) with TLS and node authentication on, and off, and
``fedmtl simulate`` on Ray with the same number of clients, rounds and model
(the default experiment). Reports wall time (start-up and shutdown included),
seconds per round, and the peak resident memory of the whole process tree.

    python benchmarks/deployment.py [--nodes 3] [--rounds 2]

Writes results/deployment.json and results/deployment.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import ROOT, RunResult, TreeMemory, measured_run, run_experiment, write_results

from fedmtl.results import latest_run


def run_deployment(nodes: int, rounds: int, secure: bool, workdir: Path) -> RunResult:
    """Run ``fedmtl deploy local`` in a child process and measure its whole tree."""
    shutil.rmtree(workdir, ignore_errors=True)
    command = [sys.executable, "-m", "fedmtl", "deploy", "local", "--nodes", str(nodes)]
    command += ["--set", f"num-rounds={rounds}", "--workdir", str(workdir.resolve())]
    command += [] if secure else ["--no-tls", "--no-auth"]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with TreeMemory(process.pid) as memory:
        output, _ = process.communicate()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        sys.stdout.write(output.decode(errors="replace")[-4000:])
        raise RuntimeError(f"deploy local failed with exit code {process.returncode}")
    return measured_run(latest_run(workdir / "runs"), wall, memory)  # deploy's default output


def row(label: str, run: RunResult) -> dict[str, Any]:
    """One line of the table: times and memory of a run."""
    seconds = run.round_seconds()
    return {
        "setting": label,
        "wall-s": round(run.wall_s, 1),
        "initial-evaluation-s": round(seconds[0], 1),
        "median-round-s": round(statistics.median(seconds[1:]), 1),
        "outside-rounds-s": round(run.wall_s - sum(seconds), 1),
        "peak-rss-total-mb": round(run.peak_rss_total_mb),
    }


def main() -> None:
    """Deployment with and without TLS + auth, then the simulation; write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output-dir", type=Path, default=Path("bench-runs/deployment"))
    args = parser.parse_args()
    rows = []
    settings = (("deploy local, TLS + node auth", True), ("deploy local, insecure", False))
    for label, secure in settings:
        print(f"running: {label}", flush=True)
        workdir = args.output_dir / ("secure" if secure else "insecure")
        run = run_deployment(args.nodes, args.rounds, secure, workdir)
        rows.append(row(label, run))
    print("running: simulation", flush=True)
    simulated = run_experiment(
        "digits", {"num-clients": args.nodes, "num-rounds": args.rounds}, args.output_dir / "sim"
    )
    rows.append(row("fedmtl simulate (Ray)", simulated))
    lines = [
        f"Default experiment, {args.nodes} clients, {args.rounds} rounds, 2 CPU cores "
        "(one run each; wall time includes start-up and shutdown):",
        "",
        "| setting | wall s | initial evaluation s | median round s | outside rounds s "
        "| peak RSS, all processes (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['wall-s']:.1f} | {r['initial-evaluation-s']:.1f} "
            f"| {r['median-round-s']:.1f} | {r['outside-rounds-s']:.1f} "
            f"| {r['peak-rss-total-mb']} |"
        )
    write_results(
        "deployment", {"nodes": args.nodes, "rounds": args.rounds, "rows": rows}, "\n".join(lines)
    )


if __name__ == "__main__":
    main()
