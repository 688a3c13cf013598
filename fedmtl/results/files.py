"""The names of everything in a run directory (and in a comparison directory).

Layout of ``runs/<name>-<timestamp>/``::

    config.toml      the resolved experiment (re-runnable: fedmtl simulate config.toml)
    metrics.jsonl    one JSON record per round (round 0 = initial evaluation)
    summary.json     final and best per-task metrics, totals, the run's outcome
    report.md        round-0, final-round and best-round tables (and unseen clients,
                     per client and task rows, task interference tables)
    final/           shared.npz and task-<name>.npz: the final server-side weights
    plots/           accuracy.png, loss.png, bytes.png, one PNG per other metric,
                     task-similarity.png and client-task-similarity.png (when recorded)
    checkpoint.pkl   the last server checkpoint (with checkpoint-every >= 1)

A comparison directory (``fedmtl compare``) holds ``results.json``,
``compare.md``, ``compare.csv``, ``plots/`` and the runs under ``runs/``; with
clients holding several tasks also ``compare-clients.csv`` (one line per
strategy, client and task).
"""

from __future__ import annotations

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
FINAL_DIR = "final"
PLOTS_DIR = "plots"
CHECKPOINT_FILE = "checkpoint.pkl"

COMPARISON_RESULTS_FILE = "results.json"
COMPARISON_TABLE_FILE = "compare.md"
COMPARISON_CSV_FILE = "compare.csv"
COMPARISON_CLIENTS_FILE = "compare-clients.csv"
