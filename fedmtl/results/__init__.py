"""The run directory and everything read from it: one package owns the files of a run.

=======================  ==================================================================
module                   job
=======================  ==================================================================
``files``                the names of the files in a run (and a comparison) directory
``round_record``         :class:`RoundRecord`: one line of ``metrics.jsonl``, typed
``run_directory``        :class:`RunDirectory`: create a run, append records, write outputs
``reading``              read ``metrics.jsonl`` (tolerant of a cut-off last line), find runs
``summary``              ``summary.json``'s metrics and the run's outcome (:func:`judge_run`)
``series``, ``tables``   per-round series, markdown tables of tasks and client rows
``similarity``           task pairs' cosines (server updates, client gradients): matrix, tables
``report``               ``report.md``
``plots``                drawing ``plots/`` (matplotlib; imported only where drawn)
``rebuild``              write summary, report and plots at the end of a run or on demand
``compare``              a comparison's ``results.json``, tables (``compare_plots`` draws)
``reporters``            mirror each round to trackers: TensorBoard, MLflow (imported when named)
``sweep``                a sweep's ``sweep.json``, run slots, table (``sweep_plots`` draws)
=======================  ==================================================================

Importing this package does not import matplotlib.
"""

from fedmtl.metrics import ClientRow, ReplyIssue
from fedmtl.results.config_file import to_toml, toml_value
from fedmtl.results.files import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    FINAL_DIR,
    METRICS_FILE,
    PLOTS_DIR,
    REPORT_FILE,
    SUMMARY_FILE,
)
from fedmtl.results.reading import (
    find_runs,
    latest_run,
    read_metrics,
    read_rounds,
    read_summary,
    rounds_from_json,
)
from fedmtl.results.round_record import Phase, PhaseRecord, RoundRecord, TaskStats
from fedmtl.results.run_directory import RunDirectory
from fedmtl.results.summary import (
    RunOutcome,
    SkippedRound,
    describe_skips,
    judge_run,
    summarize_run,
)
from fedmtl.results.tables import format_task_table

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "FINAL_DIR",
    "METRICS_FILE",
    "PLOTS_DIR",
    "REPORT_FILE",
    "SUMMARY_FILE",
    "ClientRow",
    "Phase",
    "PhaseRecord",
    "ReplyIssue",
    "RoundRecord",
    "RunDirectory",
    "RunOutcome",
    "SkippedRound",
    "TaskStats",
    "describe_skips",
    "find_runs",
    "format_task_table",
    "judge_run",
    "latest_run",
    "read_metrics",
    "read_rounds",
    "read_summary",
    "rounds_from_json",
    "summarize_run",
    "to_toml",
    "toml_value",
]
