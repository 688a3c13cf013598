"""Shared helpers of the benchmarks: run an experiment in a child process and measure it.

Each run is a separate ``python -m fedmtl simulate`` process (its own Ray session), so
one run's caches and memory never flatter the next. Peak memory is sampled from the
whole process tree (driver, Ray's own processes and the client workers).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from fedmtl.results import (
    METRICS_FILE,
    RoundRecord,
    TaskStats,
    latest_run,
    read_rounds,
    toml_value,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class RunResult:
    """What one benchmarked run produced and cost."""

    run_dir: Path
    wall_s: float
    peak_rss_total_mb: float
    peak_rss_process_mb: float
    records: list[RoundRecord] = field(default_factory=list)

    def round_seconds(self) -> list[float]:
        """Seconds per record: index 0 is the initial evaluation, then rounds 1..N."""
        return [r.round_s or 0.0 for r in self.records]

    def final_tasks(self) -> TaskStats:
        """Per-task aggregates of the last round's evaluation."""
        return self.records[-1].evaluate.tasks


class TreeMemory:
    """Samples the resident memory of a process and all its descendants.

    With ``group_of`` (process -> group name) the peak of each group is kept too
    (``peak_groups``); the root process is always the group ``driver``.
    """

    def __init__(
        self,
        pid: int,
        every_s: float = 0.5,
        group_of: Callable[[psutil.Process], str] | None = None,
    ) -> None:
        self.root = psutil.Process(pid)
        self.every_s = every_s
        self.group_of = group_of
        self.peak_total = 0
        self.peak_process = 0
        self.peak_groups: dict[str, int] = {}
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _group(self, process: psutil.Process) -> str:
        if process.pid == self.root.pid or self.group_of is None:
            return "driver" if process.pid == self.root.pid else "children"
        return self.group_of(process)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            groups: dict[str, int] = {}
            sizes = []
            for process in processes:
                try:
                    rss = process.memory_info().rss
                except psutil.Error:
                    continue
                group = self._group(process)
                groups[group] = groups.get(group, 0) + rss
                sizes.append(rss)
            if sizes:
                self.peak_total = max(self.peak_total, sum(sizes))
                self.peak_process = max(self.peak_process, max(sizes))
                self.peak_processes = max(self.peak_processes, len(sizes))
                for group, rss in groups.items():
                    self.peak_groups[group] = max(self.peak_groups.get(group, 0), rss)
            self._stop.wait(self.every_s)


def run_experiment(experiment: str, overrides: dict[str, Any], output_dir: Path) -> RunResult:
    """Run ``fedmtl simulate`` on ``experiment`` with ``overrides`` and measure it."""
    output_dir = output_dir.resolve()  # the child process runs in the repository root
    output_dir.mkdir(parents=True, exist_ok=True)
    settings = {**overrides, "output-dir": str(output_dir)}
    command = [sys.executable, "-m", "fedmtl", "simulate", experiment]
    for key, value in settings.items():
        command += ["--set", f"{key}={toml_value(value)}"]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with TreeMemory(process.pid) as memory:
        output, _ = process.communicate()
    wall = time.perf_counter() - start
    ray = Path(sys.executable).parent / "ray"  # a venv need not be on PATH
    subprocess.run([str(ray), "stop", "--force"], capture_output=True, check=False)
    if process.returncode != 0:
        sys.stdout.write(output.decode(errors="replace")[-4000:])
        raise RuntimeError(f"{experiment} {overrides} failed with exit code {process.returncode}")
    return measured_run(latest_run(output_dir), wall, memory)


def measured_run(run_dir: Path, wall_s: float, memory: TreeMemory) -> RunResult:
    """The result of the run in ``run_dir``, with what it cost."""
    return RunResult(
        run_dir=run_dir,
        wall_s=wall_s,
        peak_rss_total_mb=memory.peak_total / 2**20,
        peak_rss_process_mb=memory.peak_process / 2**20,
        records=read_rounds(run_dir / METRICS_FILE),
    )


def cached_run(
    cache: Path,
    fresh: bool,
    label: str,
    experiment: str,
    overrides: dict[str, Any],
    runs_dir: Path,
    measure: Callable[[RunResult], dict[str, Any]],
) -> dict[str, Any]:
    """``measure`` of one run with its wall time and overrides, from ``cache`` when it ran.

    A finished run is not repeated (``fresh`` reruns it): its row is kept as JSON in ``cache``.
    """
    if cache.exists() and not fresh:
        return dict(json.loads(cache.read_text()))
    print(f"running: {label}", flush=True)
    run = run_experiment(experiment, overrides, runs_dir)
    row = {**measure(run), "wall-s": round(run.wall_s, 1), "overrides": overrides}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(row, indent=1))
    return row


def mean_spread(values: list[float], digits: int = 3) -> str:
    """``mean ± std`` of ``values`` (the std only for two or more)."""
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.{digits}f}{spread}"


def write_results(name: str, payload: dict[str, Any], table: str) -> None:
    """Write ``results/<name>.json`` and ``results/<name>.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")
    print(table)
