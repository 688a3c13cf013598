"""A sweep's files: ``sweep.json`` (the plan), the run slots, the results table and plots.

Layout of ``<output-dir>/sweep-<name>-<hash>/`` (the runner is :mod:`fedmtl.sweeps`)::

    sweep.json       experiment, grid, seeds, overrides, metric, plot key; points and slots
    sweep.csv        one row per grid point and task (see :func:`sweep_rows`)
    sweep.md         the same table in markdown
    plots/           <metric>-vs-<key>.png: the metric against one swept key
    runs/<point>/seed-<s>/<name>-<timestamp>/   each (point, seed)'s run directory
    feature-cache/   the frozen-feature cache every run shares

A **slot** (``runs/<point>/seed-<s>``) is the stable folder of one (point, seed); the
run directory inside it is the newest one (:func:`slot_run`). The table is always
rebuilt from the runs' ``summary.json`` files, never kept apart from them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmtl.atomic import atomic_write_text
from fedmtl.metrics import primary_metric, seed_sd
from fedmtl.results.files import CHECKPOINT_FILE, PLOTS_DIR
from fedmtl.results.reading import find_runs, read_summary
from fedmtl.results.run_directory import RunDirectory

SWEEP_FILE = "sweep.json"
SWEEP_CSV_FILE = "sweep.csv"
SWEEP_TABLE_FILE = "sweep.md"
RUNS_DIR = "runs"

FINISHED = "finished"  # summary.json present and ok: skipped when the sweep is repeated
PARTIAL = "partial"  # no summary.json (killed): resumed from its checkpoint if it has one
FAILED = "failed"  # summary.json says failed: run again
MISSING = "missing"  # never started

# The table's own columns, after one column per swept key.
TABLE_COLUMNS = ("task", "metric", "mean", "sd", "worst", "seeds")


def slot_run(slot: Path) -> Path | None:
    """The newest run directory in a slot (``None`` when the slot has none)."""
    runs = find_runs(slot)
    return runs[-1] if runs else None


def slot_state(slot: Path) -> str:
    """:data:`FINISHED`, :data:`PARTIAL`, :data:`FAILED` or :data:`MISSING` for the slot's run."""
    run_dir = slot_run(slot)
    if run_dir is None:
        return MISSING
    run = RunDirectory(run_dir)
    if not run.summary_file.exists():
        return PARTIAL
    return FAILED if run.outcome().failed else FINISHED


def resumable(run_dir: Path) -> bool:
    """Whether a partial run left a checkpoint to continue from."""
    return (run_dir / CHECKPOINT_FILE).is_file()


@dataclass(frozen=True)
class SweepRun:
    """One (point, seed) of a sweep as recorded in ``sweep.json``.

    Attributes
    ----------
    point : int
        Index of its grid point.
    values : mapping of str to Any
        The swept keys' values at that point.
    seed : int
        The run's seed.
    slot : pathlib.Path
        Its stable folder (the run directory is the newest one inside).
    """

    point: int
    values: Mapping[str, Any]
    seed: int
    slot: Path

    @property
    def run_dir(self) -> Path | None:
        """The run directory (``None`` before the run started)."""
        return slot_run(self.slot)

    @property
    def state(self) -> str:
        """See :func:`slot_state`."""
        return slot_state(self.slot)


@dataclass(frozen=True)
class SweepManifest:
    """``sweep.json``: what a sweep runs, readable without running anything."""

    folder: Path
    experiment: str
    keys: tuple[str, ...]
    grid: tuple[tuple[Any, ...], ...]
    seeds: tuple[int, ...]
    overrides: Mapping[str, Any]
    metric: str | None
    plot_key: str | None
    runs: tuple[SweepRun, ...]

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``sweep.json`` (slots relative to the folder)."""
        return {
            "experiment": self.experiment,
            "grid": [[key, list(values)] for key, values in zip(self.keys, self.grid, strict=True)],
            "seeds": list(self.seeds),
            "overrides": dict(self.overrides),
            "metric": self.metric,
            "plot-key": self.plot_key,
            "runs": [
                {
                    "point": r.point,
                    "values": dict(r.values),
                    "seed": r.seed,
                    "slot": str(r.slot.relative_to(self.folder)),
                }
                for r in self.runs
            ],
        }

    def write(self) -> None:
        """Write ``sweep.json`` atomically."""
        text = json.dumps(self.to_json(), indent=1, sort_keys=True, default=str)
        atomic_write_text(self.folder / SWEEP_FILE, text)

    @classmethod
    def read(cls, folder: Path) -> SweepManifest:
        """Read ``<folder>/sweep.json``.

        Raises
        ------
        FileNotFoundError
            When the folder holds no ``sweep.json``.
        """
        folder = Path(folder)
        data = read_summary(folder / SWEEP_FILE)
        if not data:
            raise FileNotFoundError(f"{folder} holds no {SWEEP_FILE}: it is not a fedmtl sweep")
        grid = [(str(key), tuple(values)) for key, values in data["grid"]]
        return cls(
            folder=folder,
            experiment=str(data["experiment"]),
            keys=tuple(key for key, _ in grid),
            grid=tuple(values for _, values in grid),
            seeds=tuple(int(s) for s in data["seeds"]),
            overrides=dict(data.get("overrides", {})),
            metric=data.get("metric"),
            plot_key=data.get("plot-key"),
            runs=tuple(
                SweepRun(
                    point=int(r["point"]),
                    values=dict(r["values"]),
                    seed=int(r["seed"]),
                    slot=folder / r["slot"],
                )
                for r in data["runs"]
            ),
        )


def point_finals(
    manifest: SweepManifest,
) -> list[tuple[Mapping[str, Any], list[Mapping[str, Any]]]]:
    """Per grid point (in grid order): its values and the ``final`` of each finished seed's run."""
    points: dict[int, tuple[Mapping[str, Any], list[Mapping[str, Any]]]] = {}
    for run in manifest.runs:
        _, finals = points.setdefault(run.point, (run.values, []))
        run_dir = run.run_dir
        if run_dir is None or slot_state(run.slot) != FINISHED:
            continue
        finals.append(RunDirectory(run_dir).summary().get("final", {}))
    return [points[index] for index in sorted(points)]


def sweep_rows(
    points: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]],
    metric: str | None = None,
) -> list[dict[str, Any]]:
    """One row per (grid point, task): the final-round metric over seeds.

    Parameters
    ----------
    points : sequence of (values, finals)
        Each grid point's swept values and its finished runs' ``summary.json``
        ``final`` sections (one per seed: task -> statistics).
    metric : str, optional
        The metric ``m`` to report (default: each task's primary metric,
        :func:`fedmtl.metrics.primary_metric`: accuracy for classification).

    Returns
    -------
    list of dict
        The point's values, then ``task``, ``metric``, ``mean`` (mean over seeds
        of the run's ``m-mean``, the mean over clients), ``sd`` (sample sd of
        those over seeds; 0 with one seed), ``worst`` (mean over seeds of the
        run's ``m-worst``, its worst client) and ``seeds`` (how many runs the
        row averages). A point without a finished run has no rows; a task
        without ``m`` has ``None`` statistics.
    """
    rows = []
    for values, finals in points:
        tasks = sorted({task for final in finals for task in final})
        for task in tasks:
            stats = [final[task] for final in finals if task in final]
            name = metric or primary_metric(stats[0])
            means = [float(s[f"{name}-mean"]) for s in stats if f"{name}-mean" in s]
            worsts = [float(s[f"{name}-worst"]) for s in stats if f"{name}-worst" in s]
            rows.append(
                {
                    **values,
                    "task": task,
                    "metric": name,
                    "mean": statistics.mean(means) if means else None,
                    "sd": seed_sd(means) if means else None,
                    "worst": statistics.mean(worsts) if worsts else None,
                    "seeds": len(means),
                }
            )
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple | Mapping):
        return json.dumps(value)
    return str(value)


def _point_cell(value: Any) -> str:
    """A swept value as given (``0.1``, ``fedavg``, ``["a", "b"]``)."""
    return json.dumps(value) if isinstance(value, list | tuple | Mapping) else str(value)


def format_sweep_csv(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str:
    """:func:`sweep_rows` as CSV: one column per swept key, then :data:`TABLE_COLUMNS`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*keys, *TABLE_COLUMNS])
    for row in rows:
        point = [json.dumps(row[k]) if isinstance(row[k], list | tuple) else row[k] for k in keys]
        writer.writerow([*point, *("" if row[c] is None else row[c] for c in TABLE_COLUMNS)])
    return out.getvalue()


def format_sweep_markdown(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str], seeds: int
) -> str:
    """The sweep table in markdown: swept keys, task, metric, mean ± sd, worst client, seeds."""
    lines = [
        f"Final round; mean over clients, then mean ± sd over {seeds} seed(s); worst client "
        "averaged over seeds; seeds = finished runs in the row.",
        "",
        "| " + " | ".join([*keys, "task", "metric", "mean ± sd", "worst", "seeds"]) + " |",
        "|" + "---|" * (len(keys) + 2) + "---:|---:|---:|",
    ]
    for row in rows:
        spread = "-" if row["mean"] is None else f"{row['mean']:.3f} ± {row['sd']:.3f}"
        cells = [_point_cell(row[k]) for k in keys]
        cells += [row["task"], row["metric"], spread, _cell(row["worst"]), str(row["seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_sweep_report(folder: Path) -> list[Path]:
    """(Re)write ``sweep.csv``, ``sweep.md`` and the plot from ``sweep.json`` and the runs."""
    from fedmtl.results.sweep_plots import plot_sweep  # matplotlib only when drawing

    manifest = SweepManifest.read(folder)
    rows = sweep_rows(point_finals(manifest), manifest.metric)
    table = folder / SWEEP_CSV_FILE
    atomic_write_text(table, format_sweep_csv(rows, manifest.keys))
    markdown = folder / SWEEP_TABLE_FILE
    atomic_write_text(markdown, format_sweep_markdown(rows, manifest.keys, len(manifest.seeds)))
    plot_key = manifest.plot_key or manifest.keys[0]
    plots = plot_sweep(rows, manifest.keys, plot_key, folder / PLOTS_DIR) if rows else []
    return [table, markdown, *plots]
