"""Plots and tables built from a run's ``metrics.jsonl``.

A run directory holds ``metrics.jsonl`` with one JSON object per federated
round (round 0 evaluates the initial model before any training). Each record
may contain ``"round"``, ``"time"``, ``"comm"`` (``"bytes-up"`` /
``"bytes-down"``), ``"evaluate"`` and ``"train"`` sections, where a phase
section has ``"tasks"`` (per-task aggregates such as ``"accuracy-mean"``,
``"accuracy-std"``, ``"accuracy-worst"``, ``"num-clients"``) and ``"clients"``.

Every reader here is tolerant of missing keys: whatever is absent from a
record is skipped (or shown as a gap / ``-``) rather than raising.

Figures are drawn with :class:`matplotlib.figure.Figure` directly, so no
pyplot state and no GUI backend are involved; this is safe in headless runs
and from worker threads.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "MetricSeries",
    "bytes_series",
    "discover_metrics",
    "format_task_table",
    "metric_series",
    "plot_bytes",
    "plot_task_metric",
    "read_metrics",
    "write_run_plots",
]

logger = logging.getLogger(__name__)

#: Name of the metrics file inside a run directory.
METRICS_FILE = "metrics.jsonl"
#: Name of the sub-directory of a run directory that receives the plots.
PLOTS_DIR = "plots"

_BYTES_PER_MB = 1e6
_MEAN_SUFFIX = "-mean"
_PRIMARY_METRICS = ("accuracy", "loss")
_MISSING = "-"

FloatArray = npt.NDArray[np.float64]
Record = Mapping[str, Any]


@dataclass(frozen=True)
class MetricSeries:
    """Per-round values of one metric for one task.

    Attributes
    ----------
    rounds : numpy.ndarray
        Round numbers, ascending.
    mean : numpy.ndarray
        ``<metric>-mean`` for each round (``nan`` where missing).
    worst : numpy.ndarray
        ``<metric>-worst`` for each round (``nan`` where missing).
    """

    rounds: FloatArray
    mean: FloatArray
    worst: FloatArray


# --------------------------------------------------------------------------- #
# Reading
# --------------------------------------------------------------------------- #


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Read the per-round records of a ``metrics.jsonl`` file.

    Parameters
    ----------
    path : pathlib.Path
        Path of the JSON-lines file.

    Returns
    -------
    list of dict
        One dictionary per non-blank line, in file order.

    Raises
    ------
    ValueError
        If a line other than the last non-blank one is not valid JSON, or if
        any line does not hold a JSON object. The message names the 1-based
        line number.
    OSError
        If the file cannot be read (e.g. it does not exist).

    Notes
    -----
    Blank lines are ignored. An unparsable *last* non-blank line is taken to
    be a record cut short by a run killed mid-write: it is skipped and a
    warning is logged.
    """
    text = Path(path).read_text(encoding="utf-8")
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    records: list[dict[str, Any]] = []
    for index, (number, line) in enumerate(lines):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            if index == len(lines) - 1:
                logger.warning("%s: skipping truncated last line %d (%s)", path, number, err.msg)
                break
            raise ValueError(f"{path}: malformed JSON on line {number}: {err.msg}") from err
        if not isinstance(value, dict):
            raise ValueError(
                f"{path}: line {number} is not a JSON object (got {type(value).__name__})"
            )
        records.append(value)
    return records


# --------------------------------------------------------------------------- #
# Extraction helpers
# --------------------------------------------------------------------------- #


def _mapping(container: Any, key: str) -> Mapping[str, Any]:
    """Return ``container[key]`` if it is a mapping, else an empty mapping."""
    if isinstance(container, Mapping):
        value = container.get(key)
        if isinstance(value, Mapping):
            return value
    return {}


def _number(value: Any) -> float:
    """Convert a JSON number to float; anything else becomes ``nan``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _round_of(record: Record) -> int | None:
    """Return the record's round number, or ``None`` if it has none."""
    value = record.get("round")
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _by_round(records: Sequence[Record]) -> list[tuple[int, Record]]:
    """Return ``(round, record)`` pairs sorted by round.

    Records without an integer ``"round"`` are skipped; if a round appears
    more than once the later record wins (e.g. a resumed run).
    """
    latest: dict[int, Record] = {}
    for record in records:
        number = _round_of(record)
        if number is not None:
            latest[number] = record
    return sorted(latest.items())


def _phase_tasks(record: Record, phase: str) -> Mapping[str, Any]:
    """Return the ``record[phase]["tasks"]`` mapping (empty if missing)."""
    return _mapping(_mapping(record, phase), "tasks")


def discover_metrics(records: Sequence[Record], phase: str = "evaluate") -> list[str]:
    """List the task metrics reported in a phase.

    A metric ``m`` is reported when some task of some record has an
    ``"m-mean"`` entry in ``record[phase]["tasks"]``.

    Parameters
    ----------
    records : sequence of mapping
        Per-round records as returned by :func:`read_metrics`.
    phase : str, default "evaluate"
        Phase section to inspect (``"evaluate"`` or ``"train"``).

    Returns
    -------
    list of str
        ``"accuracy"`` and ``"loss"`` first (when present), then the other
        metric names in alphabetical order.
    """
    found: set[str] = set()
    for record in records:
        for stats in _phase_tasks(record, phase).values():
            if isinstance(stats, Mapping):
                found.update(
                    key[: -len(_MEAN_SUFFIX)]
                    for key in stats
                    if isinstance(key, str) and key.endswith(_MEAN_SUFFIX) and key != _MEAN_SUFFIX
                )
    primary = [name for name in _PRIMARY_METRICS if name in found]
    return primary + sorted(found.difference(_PRIMARY_METRICS))


def metric_series(
    records: Sequence[Record], metric: str, phase: str = "evaluate"
) -> dict[str, MetricSeries]:
    """Collect ``<metric>-mean`` and ``<metric>-worst`` per task over rounds.

    Parameters
    ----------
    records : sequence of mapping
        Per-round records as returned by :func:`read_metrics`.
    metric : str
        Metric name without suffix, e.g. ``"accuracy"``.
    phase : str, default "evaluate"
        Phase section to read (``"evaluate"`` or ``"train"``).

    Returns
    -------
    dict of str to MetricSeries
        One entry per task that reports ``<metric>-mean`` in at least one
        round, sorted by task name. Each series spans the rounds that have
        the task in ``phase``; missing values are ``nan``.
    """
    mean_key, worst_key = f"{metric}-mean", f"{metric}-worst"
    points: dict[str, list[tuple[int, float, float]]] = {}
    for number, record in _by_round(records):
        for task, stats in _phase_tasks(record, phase).items():
            if not isinstance(stats, Mapping):
                continue
            mean, worst = _number(stats.get(mean_key)), _number(stats.get(worst_key))
            points.setdefault(str(task), []).append((number, mean, worst))
    series: dict[str, MetricSeries] = {}
    for task in sorted(points):
        rows = points[task]
        if all(math.isnan(mean) for _, mean, _ in rows):
            continue
        series[task] = MetricSeries(
            rounds=np.array([row[0] for row in rows], dtype=np.float64),
            mean=np.array([row[1] for row in rows], dtype=np.float64),
            worst=np.array([row[2] for row in rows], dtype=np.float64),
        )
    return series


def bytes_series(records: Sequence[Record]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Collect communication volume per round, in megabytes (10**6 bytes).

    Parameters
    ----------
    records : sequence of mapping
        Per-round records as returned by :func:`read_metrics`.

    Returns
    -------
    rounds, up_mb, down_mb : numpy.ndarray
        Round numbers (ascending) and ``comm["bytes-up"]`` /
        ``comm["bytes-down"]`` divided by 10**6 (``nan`` where missing).
    """
    pairs = _by_round(records)
    rounds = np.array([number for number, _ in pairs], dtype=np.float64)
    up = np.array(
        [_number(_mapping(r, "comm").get("bytes-up")) for _, r in pairs], dtype=np.float64
    )
    down = np.array(
        [_number(_mapping(r, "comm").get("bytes-down")) for _, r in pairs], dtype=np.float64
    )
    return rounds, up / _BYTES_PER_MB, down / _BYTES_PER_MB


# --------------------------------------------------------------------------- #
# Plotting
# --------------------------------------------------------------------------- #


def _save(fig: Figure, out: Path) -> Path:
    """Save ``fig`` as PNG at ``out``, creating parent directories."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out


def plot_task_metric(
    records: Sequence[Record], metric: str, out: Path, phase: str = "evaluate"
) -> Path:
    """Plot one task metric over rounds, one line per task.

    Each task gets a line of ``<metric>-mean``; the area between the mean and
    ``<metric>-worst`` (the worst client) is shaded in the same colour.

    Parameters
    ----------
    records : sequence of mapping
        Per-round records as returned by :func:`read_metrics`.
    metric : str
        Metric name without suffix, e.g. ``"accuracy"`` or ``"loss"``.
    out : pathlib.Path
        Destination PNG file; parent directories are created.
    phase : str, default "evaluate"
        Phase section to plot (``"evaluate"`` or ``"train"``).

    Returns
    -------
    pathlib.Path
        ``out``.

    Notes
    -----
    If no task reports the metric, a figure with a "no data" note is still
    written so that the output file set of a run is predictable.
    """
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    series = metric_series(records, metric, phase)
    for task, data in series.items():
        (line,) = ax.plot(data.rounds, data.mean, marker="o", markersize=3, label=task)
        band = np.isfinite(data.mean) & np.isfinite(data.worst)
        if band.any():
            ax.fill_between(
                data.rounds,
                data.worst,
                data.mean,
                where=band,
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
                label=f"{task} (worst client)",
            )
    if series:
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"{phase}: {metric} per task (line: mean, band: worst client)")
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    return _save(fig, out)


def plot_bytes(records: Sequence[Record], out: Path) -> Path:
    """Plot bytes sent up and down per round as grouped bars, in MB.

    Parameters
    ----------
    records : sequence of mapping
        Per-round records as returned by :func:`read_metrics`.
    out : pathlib.Path
        Destination PNG file; parent directories are created.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    rounds, up, down = bytes_series(records)
    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    width = 0.4
    ax.bar(rounds - width / 2, np.nan_to_num(up), width=width, label="up (clients to server)")
    ax.bar(rounds + width / 2, np.nan_to_num(down), width=width, label="down (server to clients)")
    if rounds.size:
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    total = float(np.nansum(up) + np.nansum(down)) if rounds.size else 0.0
    ax.set_title(f"communication per round (total {total:.2f} MB)")
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("MB (10^6 bytes)")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, out)


def _plot_filename(metric: str, taken: set[str]) -> str:
    """Return a safe, unused ``<metric>.png`` file name."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", metric).strip("._") or "metric"
    name = f"{stem}.png"
    while name in taken:
        stem = f"evaluate-{stem}"
        name = f"{stem}.png"
    return name


def write_run_plots(run_dir: Path) -> list[Path]:
    """Write the standard plots of a run into ``run_dir/plots``.

    Writes ``accuracy.png`` and ``loss.png`` (evaluate phase), ``bytes.png``
    and ``<metric>.png`` for every other metric found in the evaluate phase.

    Parameters
    ----------
    run_dir : pathlib.Path
        Run directory containing ``metrics.jsonl``.

    Returns
    -------
    list of pathlib.Path
        The written files: accuracy, loss, the other metrics in alphabetical
        order, then bytes.

    Raises
    ------
    ValueError
        If ``metrics.jsonl`` holds no records (or a line is malformed, see
        :func:`read_metrics`).
    OSError
        If ``metrics.jsonl`` cannot be read.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / METRICS_FILE
    records = read_metrics(metrics_path)
    if not records:
        raise ValueError(f"no metrics records in {metrics_path}: nothing to plot")
    plots_dir = run_dir / PLOTS_DIR
    metrics = list(_PRIMARY_METRICS) + [
        name for name in discover_metrics(records, "evaluate") if name not in _PRIMARY_METRICS
    ]
    taken = {"bytes.png"}
    written: list[Path] = []
    for metric in metrics:
        name = _plot_filename(metric, taken)
        taken.add(name)
        written.append(plot_task_metric(records, metric, plots_dir / name, phase="evaluate"))
    written.append(plot_bytes(records, plots_dir / "bytes.png"))
    return written


# --------------------------------------------------------------------------- #
# Tables
# --------------------------------------------------------------------------- #


def _fmt(value: Any) -> str:
    """Format a number with three decimals; missing or non-numeric -> ``-``."""
    number = _number(value)
    return _MISSING if math.isnan(number) else f"{number:.3f}"


def _fmt_count(value: Any) -> str:
    """Format a count as an integer; missing or non-numeric -> ``-``."""
    number = _number(value)
    return _MISSING if not math.isfinite(number) else str(int(number))


def format_task_table(record: Record, phase: str = "evaluate") -> str:
    """Render one round's per-task aggregates as a markdown table.

    Parameters
    ----------
    record : mapping
        One per-round record as returned by :func:`read_metrics`.
    phase : str, default "evaluate"
        Phase section to render (``"evaluate"`` or ``"train"``).

    Returns
    -------
    str
        Markdown table with columns ``task | clients | accuracy mean |
        accuracy std | worst client | 10th percentile | loss mean`` followed by one
        ``<metric> mean`` column per other metric present (alphabetical).
        "worst client" is ``accuracy-worst``, "10th percentile" ``accuracy-p10``.
        Rows are sorted by task name; numbers have three decimals and missing
        values are ``-``. A phase
        without tasks gives the header only. No trailing newline.
    """
    tasks = _phase_tasks(record, phase)
    extra = [m for m in discover_metrics([record], phase) if m not in _PRIMARY_METRICS]
    header = [
        "task",
        "clients",
        "accuracy mean",
        "accuracy std",
        "worst client",
        "10th percentile",
        "loss mean",
        *(f"{m} mean" for m in extra),
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for task in sorted(tasks, key=str):
        stats = tasks[task]
        if not isinstance(stats, Mapping):
            stats = {}
        cells = [
            str(task).replace("|", "\\|"),
            _fmt_count(stats.get("num-clients")),
            _fmt(stats.get("accuracy-mean")),
            _fmt(stats.get("accuracy-std")),
            _fmt(stats.get("accuracy-worst")),
            _fmt(stats.get("accuracy-p10")),
            _fmt(stats.get("loss-mean")),
            *(_fmt(stats.get(f"{m}-mean")) for m in extra),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
