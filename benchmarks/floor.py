"""Floor benchmark: a frozen-backbone fedmtl run next to the same maths as a plain torch loop.

The workload (issue 14): 12 clients, two 5-class fortune-topic tasks (the ten
default fortune categories split in two, as ``files`` CSV tasks), 150 train + 50
test texts per client (iid), frozen MiniLM (64 tokens), the head trained 1 epoch
per round with Adam (lr 0.01, batch 32), heads averaged per task (weighted by
examples, as FedAvg does), 20 rounds, every client evaluated every round.

Both arms run as child processes, one after the other, in one run of this script:

* ``plain``: this file with ``--plain``: a sequential PyTorch loop that encodes each
  client's texts once, then per round trains each client's head, averages the
  heads per task and evaluates every client. It takes its clients' data and the
  initial model from fedmtl (so both arms start from the same numbers) and uses
  the same per-client seeds and batch order, so the metrics should agree.
  It runs on one thread, as each fedmtl client does.
* ``fedmtl``: ``fedmtl simulate simulations/text_minilm.toml`` with the overrides below.

Reported: wall time of each whole process, their ratio, per-round times
(fedmtl's from its ``metrics.jsonl``), the time outside the recorded rounds (Ray's
and the apps' start-up and the final outputs: the wall clock less the rounds, the
initial evaluation being round 0), peak resident
memory of each process tree, and the largest metric difference between the arms.

    python benchmarks/floor.py [--rounds 20] [--output-dir bench-runs/floor]

Writes results/floor.json and results/floor.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TASKS = {
    "topic-a": ("people", "definitions", "cookie", "computers", "songs-poems"),
    "topic-b": ("politics", "miscellaneous", "work", "science", "men-women"),
}
CLIENTS = 12
PER_CLIENT = 200  # 150 train + 50 test with test-fraction 0.25
EXPERIMENT = "text_minilm"
#: Issue 14's bound on every round after the first (round 1 encodes the train texts).
LATER_ROUND_LIMIT_S = 0.4


def write_task_files(data_dir: Path) -> dict[str, Any]:
    """Write one CSV per task (text, category) from the fortunes package; return the options."""
    from fedmtl.data.fortunes import DEFAULT_FORTUNES_DIR, read_fortune_file

    data_dir.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {}
    for task, categories in TASKS.items():
        path = data_dir / f"{task}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            for category in categories:
                for entry in read_fortune_file(Path(DEFAULT_FORTUNES_DIR) / category):
                    writer.writerow([entry, category])
        options[task] = {"path": str(path.resolve()), "labels": list(categories)}
    return {"tasks": options}


def overrides(data_dir: Path, rounds: int) -> dict[str, Any]:
    """The fedmtl settings of the workload (over simulations/text_minilm.toml)."""
    per_task = CLIENTS // len(TASKS) * PER_CLIENT
    return {
        "name": "floor",
        "dataset": "files",
        "dataset-options": write_task_files(data_dir),
        "tasks": list(TASKS),
        "num-clients": CLIENTS,
        "partitioner": "iid",
        "max-examples-per-task": per_task,
        "test-fraction": 0.25,
        "feature-cache": "memory",
        "num-rounds": rounds,
        "local-epochs": 1,
        "optimizer": "adam",
        "learning-rate": 0.01,
        "batch-size": 32,
        "fraction-train": 1.0,
        "fraction-evaluate": 1.0,
    }


def plain_loop(settings: dict[str, Any], out: Path) -> None:
    """The workload as a sequential torch loop; write per-round metrics and times to ``out``."""
    start = time.perf_counter()
    import torch

    from fedmtl.config import load_experiment, partition_spec
    from fedmtl.data import client_tasks
    from fedmtl.features import extract_features
    from fedmtl.run_model import initial_model
    from fedmtl.training import batch_order, client_seed

    # One thread, as each fedmtl client worker has (Ray's OMP_NUM_THREADS, the handlers'
    # set_num_threads): on a shared 2-core machine two threads made tiny steps ~100x slower.
    torch.set_num_threads(1)
    cfg = load_experiment(EXPERIMENT, settings)
    spec = partition_spec(cfg)
    clients = [client_tasks(spec, c)[0] for c in range(cfg.num_clients)]
    model = initial_model(cfg)
    setup_s = time.perf_counter() - start
    encode_start = time.perf_counter()
    feats = {
        d.client_id: (
            extract_features(model.backbone, d.x_train),
            extract_features(model.backbone, d.x_test),
        )
        for d in clients
    }
    encode_s = time.perf_counter() - encode_start
    heads = {t: {k: v.clone() for k, v in model.heads[t].state_dict().items()} for t in cfg.tasks}
    head = {t: torch.nn.Linear(*reversed(heads[t]["weight"].shape)) for t in cfg.tasks}

    def evaluate() -> list[dict[str, Any]]:
        rows = []
        with torch.no_grad():
            for d in clients:
                module = head[d.task]
                module.load_state_dict(heads[d.task])
                logits = module(feats[d.client_id][1])
                y = torch.as_tensor(d.y_test)
                loss = float(torch.nn.functional.cross_entropy(logits, y, reduction="sum")) / len(y)
                accuracy = float((logits.argmax(1) == y).float().mean())
                rows.append(
                    {"client-id": d.client_id, "task": d.task, "loss": loss, "accuracy": accuracy}
                )
        return rows

    records = [{"round": 0, "round-s": 0.0, "evaluate": evaluate()}]
    for server_round in range(1, cfg.num_rounds + 1):
        round_start = time.perf_counter()
        updates: dict[str, list[tuple[dict[str, torch.Tensor], int]]] = {t: [] for t in cfg.tasks}
        for d in clients:
            module = head[d.task]
            module.load_state_dict(heads[d.task])
            seed = client_seed(cfg.seed, server_round, d.client_id)
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            optimizer = torch.optim.Adam(module.parameters(), lr=cfg.learning_rate)
            x, y = feats[d.client_id][0], torch.as_tensor(d.y_train)
            for _ in range(cfg.local_epochs):
                for batch in batch_order(len(y), cfg.batch_size, generator):
                    if len(batch) < 2:
                        continue
                    optimizer.zero_grad()
                    loss = torch.nn.functional.cross_entropy(module(x[batch]), y[batch])
                    torch.autograd.backward(loss)
                    optimizer.step()
            state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            updates[d.task].append((state, len(y)))
        for task, replies in updates.items():
            total = sum(n for _, n in replies)
            heads[task] = {k: sum(s[k] * (n / total) for s, n in replies) for k in heads[task]}
        rows = evaluate()
        records.append(
            {"round": server_round, "round-s": time.perf_counter() - round_start, "evaluate": rows}
        )
    result = {
        "setup-s": setup_s,
        "encode-s": encode_s,
        "torch-threads": torch.get_num_threads(),
        "wall-in-process-s": time.perf_counter() - start,
        "records": records,
    }
    out.write_text(json.dumps(result) + "\n")


def _measured(command: list[str]) -> tuple[float, float]:
    """Run ``command`` (repository root); its wall seconds and peak tree RSS in MiB."""
    from common import ROOT, TreeMemory

    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT)
    with TreeMemory(process.pid, every_s=0.2) as memory:
        process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"{command} failed with exit code {process.returncode}")
    return time.perf_counter() - start, memory.peak_total / 2**20


def _final_rows(rows: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, float]]:
    return {(int(r["client-id"]), str(r["task"])): r for r in rows}


def main() -> None:
    """Run both arms, compare their metrics and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--output-dir", type=Path, default=Path("bench-runs/floor"))
    parser.add_argument("--plain", type=Path, help=argparse.SUPPRESS)  # child: write here
    args = parser.parse_args()
    output = args.output_dir.resolve()
    settings = overrides(output / "data", args.rounds)
    if args.plain:
        plain_loop(settings, args.plain)
        return

    from common import run_experiment, write_results

    plain_file = output / "plain.json"
    command = [sys.executable, __file__, "--rounds", str(args.rounds)]
    plain_wall, plain_mb = _measured(
        [*command, "--output-dir", str(output), "--plain", str(plain_file)]
    )
    plain = json.loads(plain_file.read_text())
    fed = run_experiment(
        EXPERIMENT, {**settings, "output-dir": str(output / "runs")}, output / "runs"
    )
    fed_seconds = fed.round_seconds()
    # Outside the recorded rounds (round 0 = the initial evaluation): Ray's and the apps'
    # start (imports, data, model), and the end (final outputs, Ray's shutdown).
    start_up = fed.wall_s - sum(fed_seconds)
    plain_rows = _final_rows(plain["records"][-1]["evaluate"])
    fed_rows = {row.key: row.metrics for row in fed.records[-1].evaluate.clients}
    differences = {
        metric: max(
            abs(float(fed_rows[k][metric]) - float(plain_rows[k][metric])) for k in plain_rows
        )
        for metric in ("loss", "accuracy")
    }
    same_clients = set(plain_rows) == set(fed_rows)
    plain_later = [r["round-s"] for r in plain["records"][2:]]
    fed_later = fed_seconds[2:]
    payload = {
        "workload": {
            "clients": CLIENTS,
            "tasks": {t: list(c) for t, c in TASKS.items()},
            "rounds": args.rounds,
            "train-per-client": 150,
            "test-per-client": 50,
        },
        "plain": {
            "wall-s": plain_wall,
            "peak-rss-total-mb": plain_mb,
            "setup-s": plain["setup-s"],
            "encode-s": plain["encode-s"],
            "torch-threads": plain["torch-threads"],
            "round-s": [r["round-s"] for r in plain["records"]],
        },
        "fedmtl": {
            "wall-s": fed.wall_s,
            "peak-rss-total-mb": fed.peak_rss_total_mb,
            "peak-rss-process-mb": fed.peak_rss_process_mb,
            "outside-rounds-s": start_up,
            "round-s": fed_seconds,
            "run-dir": str(fed.run_dir),
        },
        "ratio-wall": fed.wall_s / plain_wall,
        "fedmtl-later-round-mean-s": statistics.mean(fed_later),
        "fedmtl-later-round-max-s": max(fed_later),
        "later-round-limit-s": LATER_ROUND_LIMIT_S,
        "fedmtl-later-rounds-over-limit": sum(s > LATER_ROUND_LIMIT_S for s in fed_later),
        "fedmtl-later-rounds-within-limit": max(fed_later) <= LATER_ROUND_LIMIT_S,
        "plain-later-round-mean-s": statistics.mean(plain_later),
        "same-clients": same_clients,
        "final-max-abs-difference": differences,
    }
    table = "\n".join(
        [
            f"Floor: {CLIENTS} clients, 2 fortune-topic tasks x 5 classes, 150 + 50 texts per "
            f"client, frozen MiniLM (64 tokens), {args.rounds} rounds, head 1 epoch Adam.",
            "",
            "| arm | whole run (s) | start-up (s) | round 0 / encode (s) | round 1 (s) "
            "| rounds 2.. mean / max (s) | peak RSS, all processes (MiB) |",
            "|---|---|---|---|---|---|---|",
            f"| plain torch loop | {plain_wall:.1f} "
            f"| {plain['setup-s']:.1f} (imports, data, model) "
            f"| {plain['encode-s']:.1f} (encode all) | {plain['records'][1]['round-s']:.3f} "
            f"| {statistics.mean(plain_later):.3f} / {max(plain_later):.3f} | {plain_mb:,.0f} |",
            f"| fedmtl simulate | {fed.wall_s:.1f} | {start_up:.1f} (Ray, apps, outputs) "
            f"| {fed_seconds[0]:.1f} (evaluation, encodes test) | {fed_seconds[1]:.2f} "
            f"| {statistics.mean(fed_later):.3f} / {max(fed_later):.3f} "
            f"| {fed.peak_rss_total_mb:,.0f} |",
            "",
            f"fedmtl / plain, whole run: **{fed.wall_s / plain_wall:.2f}x**. Final per-client "
            f"metrics, largest difference: loss {differences['loss']:.2e}, accuracy "
            f"{differences['accuracy']:.2e} (same clients: {same_clients}).",
            "",
            f"fedmtl rounds after the first (2..{args.rounds}): mean "
            f"{statistics.mean(fed_later):.3f} s, max **{max(fed_later):.3f} s**; "
            f"{sum(s > LATER_ROUND_LIMIT_S for s in fed_later)} of {len(fed_later)} over "
            f"{LATER_ROUND_LIMIT_S} s (within the bound: "
            f"{'yes' if max(fed_later) <= LATER_ROUND_LIMIT_S else 'no'}).",
        ]
    )
    write_results("floor", payload, table)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
