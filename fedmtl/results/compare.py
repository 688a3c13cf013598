"""A strategy comparison's files: ``results.json``, its tables and plots.

``results.json`` holds, per strategy and seed, the run's final-round and
best-round per-task statistics, its accuracy curve and its run directory (the
centralized reference has its final statistics and its chosen learning rate).
``compare.md`` and ``compare.csv`` give the final round, mean ± sd over seeds,
and the gain over local-only per task; they and ``plots/`` can always be
rebuilt from ``results.json`` (``fedmtl report <compare dir>``). The runner is
:func:`fedmtl.compare.run_comparison`.
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
from fedmtl.results.files import (
    COMPARISON_CSV_FILE,
    COMPARISON_RESULTS_FILE,
    COMPARISON_TABLE_FILE,
    PLOTS_DIR,
)
from fedmtl.results.run_directory import RunDirectory
from fedmtl.results.summary import judge_run, summarize_run

LOCAL_ONLY = "local-only"
CENTRALIZED = "centralized"
# Per-task statistics of the final round that the table reports.
STATISTICS = ("accuracy-mean", "accuracy-std", "accuracy-worst", "accuracy-p10")


def run_entry(run_dir: Path) -> dict[str, Any]:
    """One run's entry of ``results.json``: final and best rounds, accuracy curve, directory.

    ``status`` and ``failure`` say whether the run trained at all (see
    :func:`~fedmtl.results.judge_run`).
    """
    records = RunDirectory(run_dir).rounds()
    summary = summarize_run(records)
    outcome = judge_run(records)
    curves = {
        str(r.round): {t: s.get("accuracy-mean") for t, s in r.evaluate.tasks.items()}
        for r in records
        if r.evaluate.tasks
    }
    return {
        "run-dir": str(run_dir),
        "final": summary.get("final", {}),
        "best-round": summary.get("best-round", {}),
        "rounds": curves,
        "status": outcome.status,
        "failure": outcome.failure,
    }


def write_comparison_results(folder: Path, results: Mapping[str, Any]) -> None:
    """Write ``results.json`` atomically (what finished so far stays on disk)."""
    atomic_write_text(
        folder / COMPARISON_RESULTS_FILE, json.dumps(results, indent=1, sort_keys=True)
    )


def comparison_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (strategy, task): final-round statistics, mean and std over seeds.

    ``gain`` is the strategy's ``accuracy-mean`` minus local-only's, per seed,
    averaged over seeds (``None`` without a local-only run).
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
            row: dict[str, Any] = {"strategy": strategy, "task": task, "seeds": len(per_seed)}
            for stat in STATISTICS:
                values = [e["final"][task][stat] for e in per_seed.values() if task in e["final"]]
                row[stat] = statistics.mean(values)
                row[f"{stat}-sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
            gains = [
                entry["final"][task]["accuracy-mean"] - local[seed]["final"][task]["accuracy-mean"]
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
    header = ["strategy"] + [f"{t}: mean ± sd / worst / p10 / gain" for t in tasks]
    lines = [
        f"Final round, client accuracy per task; mean ± sd over {seeds} seed(s); worst client "
        "and 10th percentile averaged over seeds; gain = mean minus local-only's.",
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
            cells.append(
                f"{row['accuracy-mean']:.3f} ± {row['accuracy-mean-sd']:.3f} / "
                f"{row['accuracy-worst']:.3f} / {row['accuracy-p10']:.3f} / {gain}"
            )
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The comparison rows as CSV (one row per strategy and task)."""
    columns = ["strategy", "task", "seeds"]
    columns += [c for stat in STATISTICS for c in (stat, f"{stat}-sd")] + ["gain"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c) for c in columns})
    return out.getvalue()


def write_comparison_report(folder: Path) -> list[Path]:
    """(Re)write ``compare.md``, ``compare.csv`` and the plots from ``results.json``."""
    from fedmtl.results.compare_plots import plot_comparison  # matplotlib only when drawing

    results = json.loads((folder / COMPARISON_RESULTS_FILE).read_text())
    rows = comparison_rows(results)
    markdown = folder / COMPARISON_TABLE_FILE
    markdown.write_text(format_markdown(rows, len(results["seeds"])))
    table = folder / COMPARISON_CSV_FILE
    table.write_text(format_csv(rows))
    return [markdown, table, *plot_comparison(results, rows, folder / PLOTS_DIR)]
