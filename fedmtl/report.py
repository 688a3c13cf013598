"""A run's ``report.md``: initial, final and best-round per-task tables, kept apart.

A run directory's ``metrics.jsonl`` holds every client's metrics of every
evaluated round, so the report, the summary and the plots can always be rebuilt
from it (``fedmtl report``, :func:`fedmtl.compare.rebuild_report`).
"""

from __future__ import annotations

import json
from pathlib import Path

from fedmtl.plots import METRICS_FILE, format_task_table, read_metrics
from fedmtl.results import SUMMARY_FILE, summarize_run

REPORT_FILE = "report.md"


def run_report(run_dir: Path) -> str:
    """Markdown of a run: per-task tables of round 0, the final round and the best rounds."""
    records = read_metrics(run_dir / METRICS_FILE)
    evaluated = [r for r in records if r["evaluate"]["tasks"]]
    if not evaluated:
        return f"# {run_dir.name}\n\nno evaluated round yet\n"
    summary = summarize_run(records)
    lines = [
        f"# {run_dir.name}",
        "",
        f"Round 0 (initial model), per task over clients:\n\n{format_task_table(evaluated[0])}",
        "",
        f"Final round {evaluated[-1]['round']}, per task over clients:\n\n"
        f"{format_task_table(evaluated[-1])}",
        "",
        "Best round per task (mean client accuracy; reported apart from the final round):",
        "",
        "| task | best round | accuracy mean |",
        "|:---|---:|---:|",
    ]
    for task, best in sorted(summary["best-round"].items()):
        lines.append(f"| {task} | {best['round']} | {best['accuracy-mean']:.3f} |")
    summary_path = run_dir / SUMMARY_FILE
    saved = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if "unseen" in saved:
        unseen = saved["unseen"]
        lines += [
            "",
            f"Unseen clients (held out of training; a fresh head tuned "
            f"{unseen['finetune-epochs']} epochs on the final shared part):",
            "",
            format_task_table({"evaluate": unseen}),
        ]
    return "\n".join(lines) + "\n"
