"""Drawing a run's plots (``plots/``) from its round records.

Figures are drawn with :class:`matplotlib.figure.Figure` directly, so no
pyplot state and no GUI backend are involved; this is safe in headless runs
and from worker threads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedmtl.results.files import METRICS_FILE, PLOTS_DIR
from fedmtl.results.reading import read_rounds
from fedmtl.results.round_record import Phase, RoundRecord
from fedmtl.results.series import PRIMARY_METRICS, bytes_series, discover_metrics, metric_series
from fedmtl.results.similarity import client_pairs, mean_task_similarity, similarity_matrix

_BYTES_PLOT = "bytes.png"
_SIMILARITY_PLOT = "task-similarity.png"
_CLIENT_SIMILARITY_PLOT = "client-task-similarity.png"


def _save(fig: Figure, out: Path) -> Path:
    """Save ``fig`` as PNG at ``out``, creating parent directories."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out


def plot_task_metric(
    records: Sequence[RoundRecord], metric: str, out: Path, phase: Phase = "evaluate"
) -> Path:
    """Plot one task metric over rounds, one line per task.

    Each task gets a line of ``<metric>-mean``; the area between the mean and
    ``<metric>-worst`` (the worst client) is shaded in the same colour.

    Parameters
    ----------
    records : sequence of RoundRecord
        Per-round records.
    metric : str
        Metric name without suffix, e.g. ``"accuracy"`` or ``"loss"``.
    out : pathlib.Path
        Destination PNG file; parent directories are created.
    phase : {"evaluate", "train"}
        Phase to plot.

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


def plot_bytes(records: Sequence[RoundRecord], out: Path) -> Path:
    """Plot bytes sent up and down per round as grouped bars, in MB; return ``out``."""
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


def plot_similarity_heatmap(pairs: Mapping[tuple[str, str], float], out: Path, title: str) -> Path:
    """Draw a task-by-task heatmap of pair cosines (blank where a pair is missing); return ``out``.

    The one drawing of both interference heatmaps (server updates, client gradients).
    """
    tasks, matrix = similarity_matrix(dict(pairs))
    size = 2.5 + 0.9 * len(tasks)
    fig = Figure(figsize=(size + 1.2, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="RdBu_r", vmin=-1.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="cosine")
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    ax.set_yticks(range(len(tasks)), tasks)
    for (i, j), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            colour = "white" if abs(value) > 0.6 else "black"  # readable on dark cells
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color=colour, fontsize="small")
    ax.set_title(title)
    return _save(fig, out)


def plot_task_similarity(records: Sequence[RoundRecord], out: Path) -> Path | None:
    """Draw the task-by-task heatmap of the mean update cosines; return ``out``.

    Cells hold the mean over rounds of the cosine of two task groups' mean
    shared-scope updates (:func:`~fedmtl.results.similarity.mean_task_similarity`);
    a pair never reported is left blank. Nothing is drawn (``None``) when no
    round reports a task pair.
    """
    pairs = mean_task_similarity(records)
    if not pairs:
        return None
    return plot_similarity_heatmap(pairs, out, "task similarity (mean update cosine)")


def plot_client_task_similarity(records: Sequence[RoundRecord], out: Path) -> Path | None:
    """Draw the heatmap of the clients' task-gradient cosines (mean over rounds); return ``out``.

    Cells hold the mean over rounds of ``client-task-similarity``
    (:func:`~fedmtl.results.similarity.client_pairs`). Nothing is drawn
    (``None``) when no client holding two tasks reported a cosine.
    """
    pairs = mean_task_similarity(records, client_pairs)
    if not pairs:
        return None
    return plot_similarity_heatmap(pairs, out, "task interference (client gradient cosine)")


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

    Writes ``accuracy.png`` and ``loss.png`` (evaluate phase), ``<metric>.png``
    for every other metric found in the evaluate phase, ``bytes.png``,
    ``task-similarity.png`` when two or more tasks updated the shared scope, and
    ``client-task-similarity.png`` when clients holding two tasks reported
    their task-gradient cosines.

    Returns
    -------
    list of pathlib.Path
        The written files: accuracy, loss, the other metrics in alphabetical
        order, bytes, then task similarity and client task similarity (if drawn).

    Raises
    ------
    ValueError
        If ``metrics.jsonl`` holds no records (or a line is malformed, see
        :func:`~fedmtl.results.read_metrics`).
    OSError
        If ``metrics.jsonl`` cannot be read.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / METRICS_FILE
    records = read_rounds(metrics_path)
    if not records:
        raise ValueError(f"no metrics records in {metrics_path}: nothing to plot")
    plots_dir = run_dir / PLOTS_DIR
    metrics = list(PRIMARY_METRICS) + [
        name for name in discover_metrics(records) if name not in PRIMARY_METRICS
    ]
    taken = {_BYTES_PLOT, _SIMILARITY_PLOT, _CLIENT_SIMILARITY_PLOT}
    written: list[Path] = []
    for metric in metrics:
        name = _plot_filename(metric, taken)
        taken.add(name)
        written.append(plot_task_metric(records, metric, plots_dir / name))
    written.append(plot_bytes(records, plots_dir / _BYTES_PLOT))
    heatmaps = [
        plot_task_similarity(records, plots_dir / _SIMILARITY_PLOT),
        plot_client_task_similarity(records, plots_dir / _CLIENT_SIMILARITY_PLOT),
    ]
    return [*written, *(path for path in heatmaps if path is not None)]
