"""A run's ``report.md``: initial, final and best-round per-task tables, kept apart.

A run directory's ``metrics.jsonl`` holds every client's metrics of every
evaluated round, so the report, the summary and the plots can always be rebuilt
from it (``fedmtl report``, :func:`fedmtl.results.rebuild.rebuild_report`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fedmtl.results.dp_sgd import dp_sgd_table
from fedmtl.results.privacy import privacy_lines
from fedmtl.results.run_directory import RunDirectory
from fedmtl.results.similarity import client_similarity_table, task_similarity_table
from fedmtl.results.summary import RunOutcome, describe_skips, summarize_run
from fedmtl.results.tables import format_client_table, format_task_table, holds_several_tasks


def best_round_table(best: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The report's best-round lines: each task's round with the best primary-metric mean.

    One metric across the tasks (``accuracy``) gives ``| task | best round |
    accuracy mean |``; mixed kinds (accuracy and a regression's MAE) add a
    ``metric`` column and the last one reads ``mean``.
    """
    metrics = {
        task: next(k for k in entry if k != "round").removesuffix("-mean")
        for task, entry in best.items()
    }
    used = sorted(set(metrics.values())) or ["accuracy"]
    mixed = len(used) > 1
    what = "the primary metric's" if mixed else f"{used[0]}"
    lines = [
        f"Best round per task (mean client {what}; reported apart from the final round):",
        "",
        "| task | best round | metric | mean |"
        if mixed
        else f"| task | best round | {used[0]} mean |",
        "|:---|---:|:---|---:|" if mixed else "|:---|---:|---:|",
    ]
    for task, entry in sorted(best.items()):
        metric = metrics[task]
        value = f"{entry[f'{metric}-mean']:.3f}"
        cells = [task, str(entry["round"]), *([metric] if mixed else []), value]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def run_report(run_dir: Path) -> str:
    """Markdown of a run: per-task tables of round 0, the final round and the best rounds.

    When a client holds several tasks, the final round's client rows follow,
    one line per client per task (:func:`~fedmtl.results.tables.format_client_table`).
    With two or more tasks updating the shared scope, a task-by-task table of
    the mean cosine of their updates follows (:mod:`fedmtl.results.similarity`),
    and with clients reporting their task-gradient cosines, the "Task
    interference (client gradients)" table.
    """
    run = RunDirectory(run_dir)
    records = run.rounds()
    evaluated = [r for r in records if r.evaluate.tasks]
    if not evaluated:
        return f"# {run.path.name}\n\nno evaluated round yet\n"
    summary = summarize_run(records)
    lines = [
        f"# {run.path.name}",
        "",
        "Round 0 (initial model), per task over clients:\n\n"
        f"{format_task_table(evaluated[0].evaluate.tasks)}",
        "",
        f"Final round {evaluated[-1].round}, per task over clients:\n\n"
        f"{format_task_table(evaluated[-1].evaluate.tasks)}",
        "",
        *best_round_table(summary["best-round"]),
    ]
    final = evaluated[-1].evaluate
    if holds_several_tasks(final):
        lines += [
            "",
            f"Final round {evaluated[-1].round}, per client and task (a client holding "
            "several tasks has a line per task):",
            "",
            format_client_table(final),
        ]
    sections = (task_similarity_table(records), client_similarity_table(records))
    for section in (*sections, dp_sgd_table(summary)):
        if section:
            lines += ["", *section]
    saved = run.summary()
    private = privacy_lines({**summary, "stopped": saved.get("stopped")})
    if private:
        lines += ["", *private]
    if "unseen" in saved:
        unseen = saved["unseen"]
        lines += [
            "",
            f"Unseen clients (held out of training; a fresh head tuned "
            f"{unseen['finetune-epochs']} epochs on the final shared part):",
            "",
            format_task_table(unseen["tasks"]),
        ]
    outcome = RunOutcome.from_summary(saved)
    if outcome.skipped:
        skips = describe_skips(outcome.skipped, limit=None)
        lines += ["", f"Skipped rounds ({len(outcome.skipped)}): {skips}"]
    if outcome.failed:
        lines += ["", f"**The run failed**: {outcome.failure}"]
    return "\n".join(lines) + "\n"
