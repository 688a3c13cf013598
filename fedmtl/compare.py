"""``fedmtl compare``: several strategies and seeds on one experiment, with references.

Every (strategy, seed) is a full simulation (``fedmtl simulate``) in this
process, one after another; the runs share one feature cache directory, so a
frozen backbone's features are computed once for all of them. Flower's Ray
backend shuts Ray down at the end of each ``run_simulation``, so each run
starts its own Ray session. Two references come with the strategies:

* ``local-only`` (each client trains alone: a federated strategy should beat
  it), run as a strategy like the others;
* ``centralized`` (all clients' data pooled into one multi-task model, see
  :mod:`fedmtl.centralized`): the upper reference.

Outputs, in ``<output-dir>/compare-<name>-<timestamp>/``: ``results.json`` (every
run's final-round and best-round per-task statistics and its run directory),
``compare.md`` and ``compare.csv`` (final round, mean ± std over seeds, gain over
local-only per task) and ``plots/`` (see :mod:`fedmtl.compare_plots`).
``fedmtl report <compare dir>`` rebuilds the tables and plots from
``results.json``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedmtl.atomic import atomic_write_text
from fedmtl.config import ExperimentConfig, load_experiment
from fedmtl.plots import METRICS_FILE, read_metrics, write_run_plots
from fedmtl.report import REPORT_FILE, run_report
from fedmtl.results import SUMMARY_FILE, RunDirectory, summarize_run

RESULTS_FILE = "results.json"
LOCAL_ONLY = "local-only"
CENTRALIZED = "centralized"
# Per-task statistics of the final round that the table reports.
STATISTICS = ("accuracy-mean", "accuracy-std", "accuracy-worst", "accuracy-p10")


def _run_entry(run_dir: Path) -> dict[str, Any]:
    records = read_metrics(run_dir / METRICS_FILE)
    summary = summarize_run(records)
    curves = {
        str(r["round"]): {t: s.get("accuracy-mean") for t, s in r["evaluate"]["tasks"].items()}
        for r in records
        if r["evaluate"]["tasks"]
    }
    return {
        "run-dir": str(run_dir),
        "final": summary.get("final", {}),
        "best-round": summary.get("best-round", {}),
        "rounds": curves,
    }


def run_comparison(
    experiment: str,
    strategies: Sequence[str],
    seeds: Sequence[int],
    overrides: Mapping[str, Any] | None = None,
    output_dir: Path | None = None,
    references: bool = True,
    simulate: Callable[[ExperimentConfig], Path] | None = None,
) -> Path:
    """Run every strategy for every seed; write results, tables and plots; return the folder.

    Parameters
    ----------
    experiment : str
        Experiment file or name in ``simulations/``.
    strategies : sequence of str
        Strategy names (or ``package.module:ClassName``).
    seeds : sequence of int
        Seeds; each one changes data partition, initial heads and sampling.
    overrides : mapping, optional
        Experiment keys applied to every run.
    output_dir : Path, optional
        Where the comparison folder goes (default: the experiment's ``output-dir``).
    references : bool
        Add ``local-only`` (if missing) and the centralized reference.
    simulate : callable, optional
        Runs one config and returns its run directory (default:
        :func:`fedmtl.simulation.simulate`).
    """
    from fedmtl.centralized import train_centralized

    if simulate is None:
        from fedmtl.simulation import simulate as simulate_on_ray

        simulate = simulate_on_ray
    base = load_experiment(experiment, overrides)
    root = Path(output_dir or base.output_dir)
    folder = root / f"compare-{base.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True)
    names = list(dict.fromkeys(strategies))
    if references and LOCAL_ONLY not in names:
        names.append(LOCAL_ONLY)
    results: dict[str, Any] = {
        "experiment": experiment,
        "overrides": dict(overrides or {}),
        "seeds": list(seeds),
        "strategies": names + ([CENTRALIZED] if references else []),
        "runs": {},
    }
    cache = base.feature_cache_dir or str((folder / "feature-cache").resolve())
    for seed in seeds:
        for name in names:
            values = {**(overrides or {}), "strategy": name, "seed": seed}
            values.update({"output-dir": str(folder / "runs"), "feature-cache-dir": cache})
            cfg = load_experiment(experiment, values)
            print(f"compare: {name}, seed {seed}", flush=True)
            run_dir = simulate(cfg)
            results["runs"].setdefault(name, {})[str(seed)] = _run_entry(run_dir)
            _write_json(folder, results)  # what finished so far stays on disk
        if references:
            cfg = dataclasses.replace(base, seed=seed)
            print(f"compare: centralized reference, seed {seed}", flush=True)
            central = train_centralized(cfg)
            results["runs"].setdefault(CENTRALIZED, {})[str(seed)] = {
                "final": central["tasks"],
                "learning-rate": central["learning-rate"],
                "epochs": central["epochs"],
            }
            _write_json(folder, results)
    write_report(folder)
    return folder


def _write_json(folder: Path, results: Mapping[str, Any]) -> None:
    atomic_write_text(folder / RESULTS_FILE, json.dumps(results, indent=1, sort_keys=True))


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


def write_report(folder: Path) -> list[Path]:
    """(Re)write ``compare.md``, ``compare.csv`` and the plots from ``results.json``."""
    from fedmtl.compare_plots import plot_comparison

    results = json.loads((folder / RESULTS_FILE).read_text())
    rows = comparison_rows(results)
    markdown = folder / "compare.md"
    markdown.write_text(format_markdown(rows, len(results["seeds"])))
    table = folder / "compare.csv"
    table.write_text(format_csv(rows))
    return [markdown, table, *plot_comparison(results, rows, folder / "plots")]


def rebuild_report(directory: Path) -> list[Path]:
    """Rewrite the tables and plots of a run or comparison directory; return the files.

    Raises
    ------
    FileNotFoundError
        When ``directory`` holds neither ``metrics.jsonl`` nor ``results.json``.
    """
    if (directory / RESULTS_FILE).exists():
        return write_report(directory)
    if not (directory / METRICS_FILE).exists():
        raise FileNotFoundError(
            f"{directory} holds neither {METRICS_FILE} (a run) nor {RESULTS_FILE} (a comparison)"
        )
    run = RunDirectory(directory)
    summary = summarize_run(read_metrics(directory / METRICS_FILE))
    summary_path = directory / SUMMARY_FILE
    if summary_path.exists():  # keep what only the run knew (its config)
        summary = {**json.loads(summary_path.read_text()), **summary}
    run.write_summary(summary)
    report = directory / REPORT_FILE
    report.write_text(run_report(directory))
    return [summary_path, report, *write_run_plots(directory)]
