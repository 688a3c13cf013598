"""Flower ServerApp: initial shared (and task) arrays, run the strategy, record every round.

The round loop is Flower's own (``Strategy.start``); fedmtl hooks in through
``evaluate_fn``, which Flower calls before the first round and after each
round: there we run the round-0 federated evaluation, write the round's record
to ``metrics.jsonl`` and print progress. Nothing of the loop is copied.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedmtl.assembly import build_inner_strategy, experiment_from_run_config, resolved
from fedmtl.atomic import atomic_write_text
from fedmtl.checkpoint import Checkpoint, resume_point, rounds_after, save_checkpoint
from fedmtl.config import (
    RESUME_KEY,
    RUN_DIR_KEY,
    ConfigError,
    ExperimentConfig,
    deployment_run_dir,
)
from fedmtl.metrics import primary_metric
from fedmtl.models.state import export_arrays
from fedmtl.panels import attackers, evaluation_panel, holdout_clients
from fedmtl.privacy import budget_stop_message, check_arrays, last_round, privacy_note
from fedmtl.privacy import server_stages as privacy_stages
from fedmtl.progress import with_progress
from fedmtl.records import (
    CHECKPOINT_ROUND,
    GLOBAL_VIEW_EPOCHS,
    Instruction,
    from_record,
    to_record,
)
from fedmtl.results import (
    METRICS_FILE,
    PhaseRecord,
    RoundRecord,
    RunDirectory,
    RunOutcome,
    describe_skips,
    format_task_table,
)
from fedmtl.results.rebuild import write_run_outputs, write_summary
from fedmtl.results.reporters import Reporters
from fedmtl.run_model import check_private_scopes, check_task_scope, fresh_model, run_scopes
from fedmtl.scopes import keys_in, task_relevant
from strategies import ScopedStrategy
from strategies.privacy import resume_stages
from strategies.scoped import NotEnoughNodesError, ScopedOptions


def initial_arrays(cfg: ExperimentConfig) -> tuple[ArrayRecord, dict[str, ArrayRecord]]:
    """Shared-scope arrays and, per task, task-scope arrays of the initial model."""
    model = fresh_model(cfg)
    scopes = run_scopes(cfg)
    shared = to_record(export_arrays(model, keys_in(scopes, "shared")))
    per_task = {}
    for task in cfg.tasks:
        keys = [k for k in keys_in(scopes, "task") if task_relevant(k, task)]
        if keys:
            per_task[task] = to_record(export_arrays(model, keys))
    return shared, per_task


class RoundRecorder:
    """End-of-round hook: round-0 evaluation, metrics records, progress display."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run: RunDirectory,
        strategy: ScopedStrategy,
        grid: Grid,
        evaluate_config: ConfigRecord,
        out: TextIO = sys.stdout,
        train_config: ConfigRecord | None = None,
    ) -> None:
        self.cfg, self.run, self.strategy, self.grid = cfg, run, strategy, grid
        self.evaluate_config = evaluate_config
        self.train_config = ConfigRecord() if train_config is None else train_config
        self.out = out
        self.start = self.last = time.monotonic()
        self.metrics_lines = 0
        self.last_round = cfg.num_rounds  # earlier when a privacy budget stops the run
        self.reporters = Reporters({})  # trackers mirroring each record (run_server opens them)

    def resume_from(self, checkpoint: Checkpoint) -> None:
        """Continue numbering, timing and the metrics file from ``checkpoint``."""
        self.strategy.round_offset = checkpoint.server_round
        self.start -= checkpoint.elapsed_s
        self.metrics_lines = checkpoint.metrics_lines
        self.train_config[CHECKPOINT_ROUND] = checkpoint.server_round

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Called by ``Strategy.start`` before round 1 (0) and after every round."""
        if server_round == 0 and self.strategy.round_offset:
            return None  # a resumed run: its last round is already recorded
        server_round += self.strategy.round_offset
        if server_round == 0:
            self._evaluate_initial(arrays)
        now = time.monotonic()
        record = self._record(server_round, now)
        self.last = now
        self.run.append_metrics(record)
        self.reporters.round(record)
        self.metrics_lines += 1
        self._print(record)
        every = self.cfg.checkpoint_every
        if (
            every
            and server_round
            and (server_round % every == 0 or server_round == self.last_round)
        ):
            self._checkpoint(server_round, arrays, now)
        return None

    def _checkpoint(self, server_round: int, arrays: ArrayRecord, now: float) -> None:
        checkpoint = Checkpoint.capture(
            server_round,
            from_record(arrays),
            self.strategy.state_dict(),
            self.metrics_lines,
            now - self.start,
        )
        save_checkpoint(self.run.path, checkpoint)
        # Clients may now drop state versions older than this checkpoint needs.
        self.train_config[CHECKPOINT_ROUND] = server_round

    def _evaluate_initial(self, arrays: ArrayRecord) -> None:
        config = ConfigRecord(dict(self.evaluate_config))
        messages = self.strategy.configure_evaluate(0, arrays, config, self.grid)
        replies = self.grid.send_and_receive(messages, timeout=self.cfg.round_timeout_s)
        self.strategy.aggregate_evaluate(0, replies)

    def _record(self, server_round: int, now: float) -> RoundRecord:
        log = self.strategy.rounds[server_round]
        return RoundRecord(
            round=server_round,
            round_s=round(now - self.last, 4),
            elapsed_s=round(now - self.start, 4),
            bytes_up=log.bytes_up,
            bytes_down=log.bytes_down,
            train=PhaseRecord.of(log.train),
            evaluate=PhaseRecord.of(log.evaluate),
            rejected=tuple(log.rejected),
            failures=tuple(log.failures),
            skipped=log.skipped,
            skip_reason=log.skip_reason,
            strategy=dict(log.strategy_metrics),
            task_similarity=log.task_similarity,
            client_task_similarity=log.client_task_similarity,
            client_task_similarity_clients=log.client_task_similarity_clients,
            privacy=dict(log.privacy),
        )

    def _print(self, record: RoundRecord) -> None:
        parts = []
        for task, stats in record.evaluate.tasks.items():
            metric = primary_metric(stats)  # accuracy, or e.g. a regression's MAE (named)
            mean, worst = stats.get(f"{metric}-mean"), stats.get(f"{metric}-worst")
            if mean is not None:
                name = "" if metric == "accuracy" else f"{metric} "
                parts.append(f"{task} {name}{mean:.3f} (worst {worst:.3f})")
        extra = ""
        if record.rejected or record.failures:
            extra = f"  [{len(record.rejected)} rejected, {len(record.failures)} failed]"
        if record.skipped:
            extra += f"  [skipped: {record.skip_reason or 'no reason recorded'}]"
        if "epsilon" in record.privacy:
            extra += f"  eps {record.privacy['epsilon']:.3f}"
        elif "noise-multiplier" in record.privacy:
            extra += "  eps inf"
        print(
            f"round {record.round:>3}/{self.cfg.num_rounds}  "
            f"{record.round_s or 0.0:6.2f}s  " + " | ".join(parts) + extra,
            file=self.out,
            flush=True,
        )


def run_server(
    grid: Grid, cfg: ExperimentConfig, run: RunDirectory, resume: Checkpoint | None = None
) -> dict[str, Any]:
    """Run the whole federation for ``cfg``, writing into ``run``; return the summary.

    A run that trained nothing (every round skipped, or no valid training reply)
    does not raise: its summary says ``"status": "failed"`` and the ``"failure"``,
    on disk too, where ``fedmtl simulate`` and ``fedmtl deploy`` read it.

    With ``resume`` the federation continues after the checkpoint's round: the
    strategy's state, the global arrays and the random states are restored, and
    ``metrics.jsonl`` keeps only the rounds the checkpoint covers.
    """
    cfg = resolved(cfg)  # the strategy's scope preset, as the clients apply it
    grid = with_progress(grid)  # replies received inside a round, on a terminal only
    random.seed(cfg.seed)  # Flower samples nodes with the global `random`
    np.random.seed(cfg.seed)
    check_task_scope(cfg)
    check_private_scopes(cfg)
    shared, per_task = initial_arrays(cfg)
    check_arrays(cfg, shared, per_task)
    inner = build_inner_strategy(cfg)
    redone = rounds_after(run.metrics_file, resume)  # ran once before the run was killed
    last = last_round(cfg, redone)  # num-rounds, or the last within the privacy budget
    strategy = ScopedStrategy(
        inner,
        per_task,
        ScopedOptions(
            query_timeout=cfg.round_timeout_s,
            evaluate_every=cfg.evaluate_every,
            final_round=last,
            excluded_clients=holdout_clients(cfg),
            evaluate_panel=evaluation_panel(cfg),
            node_wait_timeout=cfg.node_wait_timeout_s,
            sampling_seed=cfg.seed,
            max_update_ratio=cfg.max_update_ratio,
            task_aggregation=cfg.task_aggregation,
            tasks=tuple(cfg.tasks),
        ),
        stages=privacy_stages(cfg),
    )
    train_config = Instruction(
        local_epochs=cfg.local_epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate
    ).encode()
    evaluate_config = ConfigRecord()
    if cfg.global_view_epochs:
        evaluate_config[GLOBAL_VIEW_EPOCHS] = cfg.global_view_epochs
    recorder = RoundRecorder(cfg, run, strategy, grid, evaluate_config, train_config=train_config)
    recorder.last_round = last
    first_round = 1
    if resume is not None:
        strategy.load_state_dict(resume.strategy, same_nodes=False)
        resume_stages(strategy.stages, redone)
        shared = to_record(resume.shared)
        resume.restore_random()
        run.truncate_metrics(resume.metrics_lines)
        recorder.resume_from(resume)
        first_round = resume.server_round + 1
    # Trackers open before round 1 (a missing package stops the run here); a resumed
    # run's reporters drop or skip what they logged from its first redone round on.
    recorder.reporters = Reporters.open(cfg, run, first_round if resume is not None else 0)
    print(
        f"fedmtl: {cfg.name}: {cfg.num_clients} clients, tasks {list(cfg.tasks)}, "
        f"strategy {cfg.strategy}, rounds {first_round}-{cfg.num_rounds} -> {run.path}",
        flush=True,
    )
    if privacy_note(cfg):
        print(f"fedmtl: {privacy_note(cfg)}", flush=True)
    budget_stop = budget_stop_message(cfg, last, redone)
    try:
        result = strategy.start(
            grid=grid,
            initial_arrays=shared,
            num_rounds=max(last - first_round + 1, 0),
            timeout=cfg.round_timeout_s,
            train_config=train_config,
            evaluate_config=evaluate_config,
            evaluate_fn=recorder,
        )
    except NotEnoughNodesError as exc:
        # What finished stays on disk, summarized, before the run ends with the reason.
        print(f"fedmtl: stopping: {exc}", file=sys.stderr, flush=True)
        write_summary(run, stopped=str(exc))
        recorder.reporters.close(None)
        raise
    except BaseException:
        recorder.reporters.close(None)
        raise
    final = result.arrays if len(result.arrays) else shared
    run.save_arrays("shared", from_record(final))
    for task, record in strategy.current_task_arrays().items():
        run.save_arrays(f"task-{task}", from_record(record))
    unseen = _evaluate_unseen(cfg, strategy, grid, final)
    extra: dict[str, Any] = {"config": cfg.to_dict()}
    if unseen is not None:
        extra["unseen"] = unseen
    if cfg.attack != "none":
        extra["attackers"] = sorted(attackers(cfg))
    if budget_stop is not None:  # a clean stop, not a failure
        extra["stopped"] = budget_stop
        print(f"fedmtl: stopped: {budget_stop}", flush=True)
    # The summary says whether the run failed ("status"); the entry points read it there.
    summary = write_run_outputs(run, extra)
    recorder.reporters.close(summary)
    _print_final(run.rounds(), RunOutcome.from_summary(summary))
    return summary


def _evaluate_unseen(
    cfg: ExperimentConfig, strategy: ScopedStrategy, grid: Grid, arrays: ArrayRecord
) -> dict[str, Any] | None:
    """Held-out clients tune a fresh head on the final shared part, then test (if any)."""
    held_out = holdout_clients(cfg)
    if not held_out:
        return None
    config = Instruction(
        server_round=cfg.num_rounds, head_finetune_epochs=cfg.unseen_finetune_epochs
    ).encode()
    log = strategy.evaluate_nodes(held_out, arrays, config, grid, cfg.round_timeout_s)
    evaluated = PhaseRecord.of(log.evaluate)
    unseen = {
        "finetune-epochs": cfg.unseen_finetune_epochs,
        **evaluated.to_json(),
        "rejected": [row.to_json() for row in log.rejected],
        "failures": [row.to_json() for row in log.failures],
    }
    print(f"\nunseen clients {sorted(held_out)} (head tuned {cfg.unseen_finetune_epochs} epochs):")
    print(format_task_table(evaluated.tasks), flush=True)
    return unseen


def _print_final(records: list[RoundRecord], outcome: RunOutcome) -> None:
    evaluated = [r for r in records if r.evaluate.tasks]
    if not evaluated:
        print("no evaluation results", flush=True)
    else:
        print(
            "\nround 0 (initial model), per task over clients:\n"
            f"{format_task_table(evaluated[0].evaluate.tasks)}"
        )
        print(
            f"\nfinal round {evaluated[-1].round}, per task over clients:\n"
            f"{format_task_table(evaluated[-1].evaluate.tasks)}\n",
            flush=True,
        )
    if outcome.skipped:
        trained = sum(r.is_training_round for r in records)
        print(
            f"skipped rounds: {len(outcome.skipped)} of {trained} "
            f"({describe_skips(outcome.skipped)})\n",
            flush=True,
        )


def deployment_run(
    cfg: ExperimentConfig, run_config: Mapping[str, Any]
) -> tuple[RunDirectory, Checkpoint | None]:
    """The run directory of a ``flwr run`` and the checkpoint to resume, from its run config.

    ``resume = "<run dir>"`` continues that run from its checkpoint (``cfg`` must
    be its config, ``num-rounds`` aside); ``run-dir = "<dir>"`` starts a new run
    there (refused if a run is already recorded in it); neither makes a new
    timestamped directory under ``output-dir``.
    """
    path, resume = deployment_run_dir(run_config)
    if path is None:
        return RunDirectory.create(cfg), None
    where = Path(path).expanduser()
    if resume:
        return RunDirectory(where), resumable_deployment(where, cfg)
    if (where / METRICS_FILE).exists():
        raise ConfigError(
            RUN_DIR_KEY,
            f"'{where}' already holds a run: continue it with {RESUME_KEY} = '{where}', "
            "or choose a new directory",
        )
    run = RunDirectory.create_at(cfg, where)
    # The mark of a run whose devices keep their state under the directory's name.
    atomic_write_text(where / DEPLOYED_RUN_FILE, json.dumps({RUN_DIR_KEY: str(where)}) + "\n")
    return run, None


#: In a run directory started by ``flwr run`` with ``run-dir``: that directory (JSON).
DEPLOYED_RUN_FILE = "deployed-run.json"


def resumable_deployment(run_dir: Path, cfg: ExperimentConfig) -> Checkpoint:
    """The checkpoint a restarted deployment continues ``run_dir`` from.

    Raises
    ------
    ConfigError
        Naming ``resume`` when the run was not started with ``run-dir`` (its
        devices keep their state under the run id of that first run, which a
        new run cannot reach), else as :func:`fedmtl.checkpoint.resume_point`.
    """
    checkpoint = resume_point(run_dir, cfg, RESUME_KEY)
    if not (run_dir / DEPLOYED_RUN_FILE).is_file():
        raise ConfigError(
            RESUME_KEY,
            f"'{run_dir}' was not started by `flwr run` with run-dir = '<dir>' (no "
            f"{DEPLOYED_RUN_FILE}): its devices keep their state under that run's id, which a "
            "resumed run cannot find; start deployments with run-dir to make them resumable",
        )
    return checkpoint


#: Seconds between a simulation grid's checks for replies (Flower's default is 0.1 s). A
#: round waits twice (train, evaluate), so the default added up to 0.2 s to every round.
SIMULATION_PULL_S = 0.02


def poll_replies_often(grid: Grid) -> None:
    """Make Flower's in-memory (simulation) grid look for replies every ``SIMULATION_PULL_S``."""
    from flwr.superlink.grid import InMemoryGrid

    if isinstance(grid, InMemoryGrid):
        grid.pull_interval = SIMULATION_PULL_S


def make_server_app(
    cfg: ExperimentConfig | None = None,
    run_dir: Path | None = None,
    resume: Checkpoint | None = None,
) -> ServerApp:
    """Build the ServerApp; without ``cfg`` it reads Flower's ``run_config``.

    ``resume`` continues the run in ``run_dir`` from that checkpoint.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        poll_replies_often(grid)
        config = cfg if cfg is not None else experiment_from_run_config(context.run_config)
        if cfg is None and config.attack != "none":
            raise ConfigError("attack", "malicious clients run only under `fedmtl simulate`")
        if cfg is None:  # `flwr run`: the run config may name the run directory, or resume it
            run, checkpoint = deployment_run(config, context.run_config)
        else:
            run = RunDirectory(run_dir) if run_dir is not None else RunDirectory.create(config)
            checkpoint = resume
        run_server(grid, config, run, checkpoint)

    return app


app = make_server_app()
