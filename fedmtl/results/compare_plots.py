"""Drawing a strategy comparison: final accuracy per task, and accuracy over rounds."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure


def plot_comparison(
    results: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], out_dir: Path
) -> list[Path]:
    """Write ``final-accuracy.png`` and ``accuracy-rounds.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {r["task"]: r["metric"] for r in rows}
    return [_final_bars(rows, out_dir / "final-accuracy.png"), _curves(results, metrics, out_dir)]


def _final_bars(rows: Sequence[Mapping[str, Any]], out: Path) -> Path:
    tasks = sorted({r["task"] for r in rows})
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    by_key = {(r["strategy"], r["task"]): r for r in rows}
    metrics = {r["task"]: r["metric"] for r in rows}  # each task's primary metric
    accuracy = set(metrics.values()) <= {"accuracy"}
    fig = Figure(
        figsize=(max(7.0, 1.2 * len(strategies) * len(tasks) / 2), 4.5), layout="constrained"
    )
    ax = fig.add_subplot()
    width = 0.8 / max(len(strategies), 1)
    for i, strategy in enumerate(strategies):
        means = [by_key.get((strategy, t), {}).get(f"{metrics[t]}-mean", np.nan) for t in tasks]
        sds = [by_key.get((strategy, t), {}).get(f"{metrics[t]}-mean-sd", 0.0) for t in tasks]
        worst = [by_key.get((strategy, t), {}).get(f"{metrics[t]}-worst", np.nan) for t in tasks]
        x = np.arange(len(tasks)) + (i - (len(strategies) - 1) / 2) * width
        ax.bar(x, means, width=width, yerr=sds, capsize=2, label=strategy)
        ax.scatter(x, worst, marker="_", color="black", zorder=3)
    ax.set_xticks(np.arange(len(tasks)), tasks)
    what = "client accuracy" if accuracy else "primary metric (accuracy; MAE etc.)"
    ax.set_ylabel(f"{what} (bar: mean over clients, -: worst client)")
    ax.set_title("final round; error bar: sd over seeds")
    if accuracy:
        ax.set_ylim(0, 1.05)
    ax.legend(fontsize="small", ncols=2, loc="lower right")
    ax.grid(True, axis="y", alpha=0.3)
    fig.savefig(out, dpi=100)
    return out


def _curves(results: Mapping[str, Any], metrics: Mapping[str, str], out_dir: Path) -> Path:
    runs = results["runs"]
    tasks = sorted(
        {t for per_seed in runs.values() for e in per_seed.values() for t in e.get("final", {})}
    )
    fig = Figure(figsize=(4.5 * max(len(tasks), 1), 4.0), layout="constrained")
    axes = fig.subplots(1, max(len(tasks), 1), squeeze=False)[0]
    for ax, task in zip(axes, tasks, strict=False):
        for strategy, per_seed in runs.items():
            curves = [e["rounds"] for e in per_seed.values() if "rounds" in e]
            if not curves:
                continue
            rounds = sorted({int(r) for c in curves for r in c}, key=int)
            means = [
                statistics.mean(
                    c[str(r)][task]
                    for c in curves
                    if str(r) in c and c[str(r)].get(task) is not None
                )
                if any(str(r) in c and c[str(r)].get(task) is not None for c in curves)
                else np.nan
                for r in rounds
            ]
            ax.plot(rounds, means, marker="o", markersize=2, label=strategy)
        ax.set_title(f"{task}: mean client {metrics.get(task, 'accuracy')} (mean over seeds)")
        ax.set_xlabel("round")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize="small")
    out = out_dir / "accuracy-rounds.png"
    fig.savefig(out, dpi=100)
    return out
