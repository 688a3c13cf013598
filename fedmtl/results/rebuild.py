"""Writing a run's derived files (``summary.json``, ``report.md``, ``plots/``) from its records.

The ServerApp calls :func:`write_run_outputs` when a run ends; ``fedmtl report``
calls :func:`rebuild_report` on a saved run or comparison.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedmtl.results.compare import write_comparison_report
from fedmtl.results.files import COMPARISON_RESULTS_FILE, METRICS_FILE
from fedmtl.results.plots import write_run_plots
from fedmtl.results.report import run_report
from fedmtl.results.round_record import RoundRecord
from fedmtl.results.run_directory import RunDirectory
from fedmtl.results.summary import RunOutcome, judge_run, summarize_run
from fedmtl.results.sweep import SWEEP_FILE, write_sweep_report


def _records(run: RunDirectory) -> list[RoundRecord]:
    return run.rounds() if run.metrics_file.exists() else []


def write_summary(
    run: RunDirectory, extra: Mapping[str, Any] | None = None, stopped: str | None = None
) -> dict[str, Any]:
    """Write ``summary.json``: metrics and totals of the records, the outcome, then ``extra``.

    ``stopped`` is why the run stopped early (it failed for that reason).
    """
    records = _records(run)
    summary = {**summarize_run(records), **judge_run(records, stopped).to_json(), **(extra or {})}
    run.write_summary(summary)
    return summary


def write_run_outputs(
    run: RunDirectory, extra: Mapping[str, Any] | None = None, stopped: str | None = None
) -> dict[str, Any]:
    """Write ``summary.json`` (see :func:`write_summary`), ``plots/`` and ``report.md``.

    A run that recorded no round gets its summary only. Returns the summary.
    """
    summary = write_summary(run, extra, stopped)
    if _records(run):
        write_run_plots(run.path)
        run.write_report(run_report(run.path))
    return summary


def rebuild_report(directory: Path) -> list[Path]:
    """Rewrite the tables and plots of a run, comparison or sweep directory; return the files.

    A run's summary keeps what only the run knew (its config, unseen clients,
    attackers) and a failure the records cannot show (a run stopped early).

    Raises
    ------
    FileNotFoundError
        When ``directory`` holds neither ``metrics.jsonl`` nor ``results.json``.
    """
    if (directory / COMPARISON_RESULTS_FILE).exists():
        return write_comparison_report(directory)
    if (directory / SWEEP_FILE).exists():
        return write_sweep_report(directory)
    run = RunDirectory(directory)
    if not run.metrics_file.exists():
        raise FileNotFoundError(
            f"{directory} holds neither {METRICS_FILE} (a run) "
            f"nor {COMPARISON_RESULTS_FILE} (a comparison)"
        )
    saved = run.summary()
    failure = RunOutcome.from_summary(saved).failure
    records = run.rounds()
    run.write_summary({**saved, **summarize_run(records), **judge_run(records, failure).to_json()})
    run.write_report(run_report(directory))
    return [run.summary_file, run.report_file, *write_run_plots(directory)]
