"""Drawing a sweep: the final metric against one swept key, a line per other-key combination."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | tuple | Mapping) else str(value)


def plot_sweep(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str], plot_key: str, out_dir: Path
) -> list[Path]:
    """Write ``<metric>-vs-<plot_key>.png``: one panel per task, error bars = sd over seeds.

    Numeric values of ``plot_key`` go on a numeric axis (logarithmic when they
    are positive and span a factor of 10 or more); others are categories in
    grid order. Each line is one combination of the other swept keys.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = sorted({r["task"] for r in rows})
    metrics = sorted({r["metric"] for r in rows})
    others = [k for k in keys if k != plot_key]
    xs = list(dict.fromkeys(_text(r[plot_key]) for r in rows))
    raw = list({_text(r[plot_key]): r[plot_key] for r in rows}.values())
    numeric = _numeric(raw)
    fig = Figure(figsize=(4.5 * max(len(tasks), 1), 4.0), layout="constrained")
    axes = fig.subplots(1, max(len(tasks), 1), squeeze=False)[0]
    for ax, task in zip(axes, tasks, strict=False):
        lines: dict[str, list[Mapping[str, Any]]] = {}
        for row in rows:
            if row["task"] == task and row["mean"] is not None:
                label = ", ".join(f"{k}={_text(row[k])}" for k in others) or "mean"
                lines.setdefault(label, []).append(row)
        for label, points in lines.items():
            if numeric:
                points = sorted(points, key=lambda r: float(r[plot_key]))
                x = np.array([float(r[plot_key]) for r in points])
            else:
                x = np.array([xs.index(_text(r[plot_key])) for r in points], dtype=float)
            y = np.array([r["mean"] for r in points], dtype=float)
            err = np.array([r["sd"] for r in points], dtype=float)
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
        if numeric:
            values = [float(v) for v in raw]
            if min(values) > 0 and max(values) / min(values) >= 10:
                ax.set_xscale("log")
        else:
            ax.set_xticks(range(len(xs)), xs)
        ax.set_title(f"{task}: final {', '.join(metrics)} (mean over clients)")
        ax.set_xlabel(plot_key)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("mean over seeds; error bar: sd over seeds")
    axes[0].legend(fontsize="small")
    out = out_dir / f"{'-'.join(metrics)}-vs-{plot_key}.png"
    fig.savefig(out, dpi=100)
    return [out]
