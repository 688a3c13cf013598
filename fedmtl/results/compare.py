"""A strategy comparison's files: ``results.json``, its tables and plots.

``results.json`` holds, per strategy and seed, the run's final-round and
best-round per-task statistics, its primary-metric curve and its run directory (the
centralized reference has its final statistics and its chosen learning rate).
``compare.md`` and ``compare.csv`` give the final round, mean ± sd over seeds,
and the gain over local-only per task, in each task's primary metric
(:func:`fedmtl.metrics.primary_metric`: accuracy; a regression's MAE, where a
negative gain is the better); they and ``plots/`` can always be
rebuilt from ``results.json`` (``fedmtl report <compare dir>``). The runner is
:func:`fedmtl.compare.run_comparison`.

When a client holds several tasks, a run's entry also has ``clients``: its
final-round rows (``client-id``, ``task``, ``metric``, ``value``), and
``compare-clients.csv`` matches them across strategies by (client, task):
each pair's mean over seeds and its gain over local-only's same client and task.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedmtl.atomic import atomic_write_text
from fedmtl.metrics import lower_is_better, primary_metric, seed_sd
from fedmtl.results.files import (
    COMPARISON_CLIENTS_FILE,
    COMPARISON_CSV_FILE,
    COMPARISON_RESULTS_FILE,
    COMPARISON_TABLE_FILE,
    PLOTS_DIR,
)
from fedmtl.results.round_record import PhaseRecord
from fedmtl.results.run_directory import RunDirectory
from fedmtl.results.summary import summarize_run
from fedmtl.results.tables import holds_several_tasks

LOCAL_ONLY = "local-only"
CENTRALIZED = "centralized"
# Per-task statistics of the final round that the table reports, of the task's primary metric.
STATISTICS = ("mean", "std", "worst", "p10")


def run_entry(run_dir: Path) -> dict[str, Any]:
    """One run's entry of ``results.json``: final and best rounds, primary-metric curve, directory.

    ``status`` and ``failure`` are the run's own outcome (``summary.json``; a run
    without one stopped before the end and failed).
    """
    run = RunDirectory(run_dir)
    records = run.rounds()
    summary = summarize_run(records)
    outcome = run.outcome()
    curves = {
        str(r.round): {t: s.get(f"{primary_metric(s)}-mean") for t, s in r.evaluate.tasks.items()}
        for r in records
        if r.evaluate.tasks
    }
    entry: dict[str, Any] = {
        "run-dir": str(run_dir),
        "final": summary.get("final", {}),
        "best-round": summary.get("best-round", {}),
        "rounds": curves,
        "status": outcome.status,
        "failure": outcome.failure,
    }
    evaluated = [r for r in records if r.evaluate.tasks]
    if evaluated and holds_several_tasks(evaluated[-1].evaluate):
        entry["clients"] = client_entries(evaluated[-1].evaluate)
    return entry


def client_entries(phase: PhaseRecord) -> list[dict[str, Any]]:
    """A phase's rows as ``{"client-id", "task", "metric", "value"}`` (the task's primary metric).

    Sorted by client id, then task; a row without its task's primary metric is left out.
    """
    out = []
    for row in sorted(phase.clients, key=lambda r: r.key):
        metric = primary_metric(phase.tasks.get(row.task, {}))
        if metric in row.metrics:
            value = float(row.metrics[metric])
            out.append(
                {"client-id": row.client_id, "task": row.task, "metric": metric, "value": value}
            )
    return out


def client_comparison_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (strategy, client, task) of the runs' final-round client rows.

    Rows of different seeds and strategies are matched by ``(client-id,
    task)``. ``value`` is the mean over the seeds that have the pair; ``gain``
    the mean over seeds of the value minus local-only's for the same seed,
    client and task (``None`` without one); ``better`` whether the gain is an
    improvement (positive, or negative for an error such as MAE).
    """
    runs: Mapping[str, Mapping[str, Any]] = results["runs"]

    def by_key(entry: Mapping[str, Any]) -> dict[tuple[int, str], Mapping[str, Any]]:
        return {(int(c["client-id"]), str(c["task"])): c for c in entry.get("clients", [])}

    local = {seed: by_key(entry) for seed, entry in runs.get(LOCAL_ONLY, {}).items()}
    rows = []
    for strategy in results["strategies"]:
        seeds = {seed: by_key(entry) for seed, entry in runs.get(strategy, {}).items()}
        for key in sorted({k for pairs in seeds.values() for k in pairs}):
            found = {seed: pairs[key] for seed, pairs in seeds.items() if key in pairs}
            metric = next(iter(found.values()))["metric"]
            gains = [
                c["value"] - local[seed][key]["value"]
                for seed, c in found.items()
                if key in local.get(seed, {})
            ]
            gain = statistics.mean(gains) if gains else None
            rows.append(
                {
                    "strategy": strategy,
                    "client-id": key[0],
                    "task": key[1],
                    "metric": metric,
                    "seeds": len(found),
                    "value": statistics.mean(c["value"] for c in found.values()),
                    "gain": gain,
                    "better": None
                    if gain is None
                    else (gain < 0 if lower_is_better(metric) else gain > 0),
                }
            )
    return rows


def format_client_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """:func:`client_comparison_rows` as CSV, one line per strategy, client and task."""
    columns = ["strategy", "client-id", "task", "metric", "seeds", "value", "gain", "better"]
    return _csv(rows, columns)


def _csv(rows: Sequence[Mapping[str, Any]], columns: list[str]) -> str:
    """``rows`` as CSV with ``columns`` (a missing value: empty)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c) for c in columns})
    return out.getvalue()


def write_comparison_results(folder: Path, results: Mapping[str, Any]) -> None:
    """Write ``results.json`` atomically (what finished so far stays on disk)."""
    atomic_write_text(
        folder / COMPARISON_RESULTS_FILE, json.dumps(results, indent=1, sort_keys=True)
    )


def comparison_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (strategy, task): final-round statistics, mean and std over seeds.

    A row's ``metric`` is the task's primary metric ``m`` (``accuracy``, a
    regression's ``mae``); its statistics are ``m-mean``, ``m-std``,
    ``m-worst``, ``m-p10`` and each one's ``-sd``. ``gain`` is the strategy's
    ``m-mean`` minus local-only's, per seed, averaged over seeds (``None``
    without a local-only run).
    """
    runs: Mapping[str, Mapping[str, Any]] = results["runs"]
    local = runs.get(LOCAL_ONLY, {})
    rows = []
    for strategy in results["strategies"]:
        per_seed = runs.get(strategy, {})
        if not per_seed:
            continue
        tasks = sorted({t for entry in per_seed.values() for t in entry["final"]})
        for task in tasks:
            finals = [e["final"][task] for e in per_seed.values() if task in e["final"]]
            metric = primary_metric(finals[0])
            row: dict[str, Any] = {"strategy": strategy, "task": task, "seeds": len(per_seed)}
            row["metric"] = metric
            for stat in (f"{metric}-{s}" for s in STATISTICS):
                values = [final[stat] for final in finals]
                row[stat] = statistics.mean(values)
                row[f"{stat}-sd"] = seed_sd(values)
            key = f"{metric}-mean"
            gains = [
                entry["final"][task][key] - local[seed]["final"][task][key]
                for seed, entry in per_seed.items()
                if seed in local and task in local[seed]["final"] and task in entry["final"]
            ]
            row["gain"] = statistics.mean(gains) if gains else None
            rows.append(row)
    return rows


def format_markdown(rows: Sequence[Mapping[str, Any]], seeds: int) -> str:
    """The comparison table: strategies as rows, tasks as column groups."""
    tasks = sorted({r["task"] for r in rows})
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    by_key = {(r["strategy"], r["task"]): r for r in rows}
    metrics = {r["task"]: r["metric"] for r in rows}
    named = set(metrics.values()) != {"accuracy"}
    header = ["strategy"] + [
        f"{t}: {metrics[t] + ' ' if named else ''}mean ± sd / worst / p10 / gain" for t in tasks
    ]
    what = "each task's primary metric" if named else "client accuracy per task"
    lines = [
        f"Final round, {what}; mean ± sd over {seeds} seed(s); worst client "
        "and 10th percentile averaged over seeds; gain = mean minus local-only's"
        + (" (for an error such as MAE, negative is better)." if named else "."),
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * len(tasks),
    ]
    for strategy in strategies:
        cells = []
        for task in tasks:
            row = by_key.get((strategy, task))
            if row is None:
                cells.append("-")
                continue
            gain = "-" if row["gain"] is None else f"{row['gain']:+.3f}"
            m = row["metric"]
            cells.append(
                f"{row[f'{m}-mean']:.3f} ± {row[f'{m}-mean-sd']:.3f} / "
                f"{row[f'{m}-worst']:.3f} / {row[f'{m}-p10']:.3f} / {gain}"
            )
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The comparison rows as CSV (one row per strategy and task).

    Columns: ``strategy, task, seeds``, then each primary metric's statistics
    and their ``-sd`` (accuracy first; empty where a task has another), ``gain``.
    """
    metrics = ["accuracy", *sorted({r["metric"] for r in rows} - {"accuracy"})]
    columns = ["strategy", "task", "seeds"]
    stats = [f"{m}-{s}" for m in metrics for s in STATISTICS]
    columns += [c for stat in stats for c in (stat, f"{stat}-sd")] + ["gain"]
    return _csv(rows, columns)


def write_comparison_report(folder: Path) -> list[Path]:
    """(Re)write ``compare.md``, ``compare.csv`` and the plots from ``results.json``."""
    from fedmtl.results.compare_plots import plot_comparison  # matplotlib only when drawing

    results = json.loads((folder / COMPARISON_RESULTS_FILE).read_text())
    rows = comparison_rows(results)
    markdown = folder / COMPARISON_TABLE_FILE
    markdown.write_text(format_markdown(rows, len(results["seeds"])))
    table = folder / COMPARISON_CSV_FILE
    table.write_text(format_csv(rows))
    written = [markdown, table]
    clients = client_comparison_rows(results)
    if clients:  # some client holds several tasks
        written.append(folder / COMPARISON_CLIENTS_FILE)
        written[-1].write_text(format_client_csv(clients))
    return [*written, *plot_comparison(results, rows, folder / PLOTS_DIR)]
