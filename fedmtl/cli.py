"""Command line: ``fedmtl simulate | compare | sweep | report | deploy | scopes | ...``.

Commands: simulate, compare, sweep, report, deploy (local, stop), scopes, pretrain, experiments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedmtl.assembly import load_run
from fedmtl.config import ConfigError, ExperimentConfig, parse_override, shipped_experiments
from fedmtl.deploy.local import (
    APP_DIR,
    DeploymentError,
    DeployOptions,
    deploy_local,
    resume_options,
    stop_recorded,
)
from fedmtl.results import CONFIG_FILE, RunDirectory

DEFAULT_EXPERIMENT = "digits"


def _load(args: argparse.Namespace) -> ExperimentConfig:
    overrides = dict(parse_override(text) for text in args.set or [])
    return load_run(args.experiment, overrides)


def _add_experiment_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "experiment",
        nargs="?",
        default=DEFAULT_EXPERIMENT,
        help="experiment file (TOML) or the name of one in simulations/ (default: digits)",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override one experiment key, e.g. --set num-rounds=3 --set strategy=fedadam",
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run an experiment on the Ray simulation runtime (or resume a killed run)."""
    from fedmtl.simulation import simulate  # heavy imports only when simulating

    if args.resume:
        run_dir, cfg = _resumable(args)
        run_dir = simulate(cfg, run_dir=run_dir, verbose=args.verbose, resume=True)
        print(f"run directory: {run_dir}")
        return run_exit_status(run_dir)
    cfg = _load(args)
    run_dir = simulate(cfg, verbose=args.verbose)
    print(f"run directory: {run_dir}")
    return run_exit_status(run_dir)


def run_exit_status(run_dir: Path) -> int:
    """1 when the run failed (``summary.json`` says why, or there is none), else 0.

    The outcome is read from disk, not from an exception: an exception in the
    ServerApp does not reliably leave Ray's ``run_simulation``.
    """
    outcome = RunDirectory(run_dir).outcome()
    if outcome.failed:
        print(
            f"fedmtl: run failed: {outcome.failure}; results so far are in {run_dir}",
            file=sys.stderr,
        )
        return 1
    return 0


def _resumable(args: argparse.Namespace) -> tuple[Path, ExperimentConfig]:
    """The run directory to resume and its saved config (``num-rounds`` may be raised)."""
    run_dir = Path(args.resume)
    config_file = run_dir / CONFIG_FILE
    if not config_file.exists():
        raise ConfigError("resume", f"{config_file} not found: '{run_dir}' is not a fedmtl run")
    overrides = dict(parse_override(text) for text in args.set or [])
    if set(overrides) - {"num-rounds"}:
        raise ConfigError(
            "resume",
            f"a resumed run keeps its config; only num-rounds may change, got {sorted(overrides)}",
        )
    return run_dir, load_run(str(config_file), overrides)


def cmd_compare(args: argparse.Namespace) -> int:
    """Run several strategies and seeds on one experiment; write tables and plots."""
    from fedmtl.compare import run_comparison

    overrides = dict(parse_override(text) for text in args.set or [])
    folder = run_comparison(  # every run is validated before the first one starts
        args.experiment,
        args.strategies,
        args.seeds,
        overrides,
        Path(args.output_dir) if args.output_dir else None,
        references=not args.no_references,
    )
    print((folder / "compare.md").read_text())
    print(f"comparison directory: {folder}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a grid of experiment keys times seeds (skipping finished runs); write the table.

    Exits 1 when some run did not finish (the table holds the others), 2 for a
    bad key or value (before any run starts).
    """
    from fedmtl.results.sweep import FINISHED, SWEEP_TABLE_FILE, SweepManifest
    from fedmtl.sweeps import describe, parse_grid, run_sweep

    overrides = dict(parse_override(text) for text in args.set or [])
    folder = run_sweep(  # every run is validated before the first one starts
        args.experiment,
        [parse_grid(text) for text in args.grid],
        args.seeds,
        overrides,
        Path(args.output_dir) if args.output_dir else None,
        metric=args.metric,
        plot_key=args.plot_key,
    )
    print((folder / SWEEP_TABLE_FILE).read_text())
    print(f"sweep directory: {folder}")
    unfinished = [run for run in SweepManifest.read(folder).runs if run.state != FINISHED]
    for run in unfinished:
        print(f"fedmtl: sweep run {run.state}: {describe(run)} ({run.slot})", file=sys.stderr)
    return 1 if unfinished else 0


def _add_sweep_parser(sub: Any) -> None:
    sweep = sub.add_parser(
        "sweep", help="run every combination of --grid values times --seeds; one table"
    )
    _add_experiment_args(sweep)
    sweep.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=[V1,V2]",
        help="a swept key and its values, read like --set values, e.g. "
        "--grid dirichlet-alpha=[0.1,1.0] --grid strategy=[fedavg,fedper]",
    )
    sweep.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED")
    sweep.add_argument("--output-dir", help="where the sweep folder goes")
    sweep.add_argument(
        "--metric", help="the table's metric (default: each task's primary metric, accuracy)"
    )
    sweep.add_argument("--plot-key", help="the swept key on the plot's x axis (default: first)")
    sweep.set_defaults(func=cmd_sweep)


def cmd_report(args: argparse.Namespace) -> int:
    """Rebuild the tables and plots of a saved run or comparison."""
    from fedmtl.results.rebuild import rebuild_report  # matplotlib only when drawing

    try:
        written = rebuild_report(Path(args.directory))
    except FileNotFoundError as exc:
        print(f"fedmtl: error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


#: ``fedmtl deploy local`` options (argument name, DeployOptions field) a resumed deployment keeps.
_KEPT_ON_RESUME = (
    ("experiment", "experiment"),
    ("--nodes", "nodes"),
    ("--tls", "tls"),
    ("--auth", "auth"),
    ("--workdir", "workdir"),
    ("--app", "app_dir"),
    ("--round-timeout", "round_timeout_s"),
)


def deploy_options(args: argparse.Namespace) -> DeployOptions:
    """``fedmtl deploy local`` arguments as :class:`DeployOptions` (the experiment is checked).

    With ``--resume RUN_DIR`` the options are the ones that run was deployed
    with (its ``deployment.json``); an argument that differs from them, or a
    ``--set`` other than ``num-rounds``, is a :class:`ConfigError` naming it.
    """
    given = {
        "experiment": args.experiment,
        "nodes": args.nodes,
        "tls": args.tls,
        "auth": args.auth,
        "workdir": None if args.workdir is None else Path(args.workdir).resolve(),
        "app_dir": None if args.app is None else Path(args.app).resolve(),
        "round_timeout_s": args.round_timeout,
    }
    if args.resume:
        options = resume_options(Path(args.resume), tuple(args.set or ()))
        for name, field in _KEPT_ON_RESUME:
            value = given[field]
            if value is not None and value != getattr(options, field):
                raise ConfigError(
                    name,
                    f"{value} differs from {getattr(options, field)} of the deployment that "
                    f"ran {args.resume}; a resumed deployment keeps its options",
                )
        return options
    args.experiment = args.experiment or DEFAULT_EXPERIMENT
    _load(args)  # a bad experiment or override fails here, before any process starts
    workdir = args.workdir or Path("deployments") / time.strftime("local-%Y%m%d-%H%M%S")
    return DeployOptions(
        workdir=Path(workdir),
        nodes=3 if args.nodes is None else args.nodes,
        tls=args.tls is not False,
        auth=args.auth is not False,
        experiment=args.experiment,
        overrides=tuple(args.set or ()),
        app_dir=Path(args.app or APP_DIR),
        round_timeout_s=120.0 if args.round_timeout is None else args.round_timeout,
    )


def check_resumable(options: DeployOptions) -> None:
    """Raise :class:`ConfigError` unless ``options.resume`` can continue with ``options``.

    The checks of the ServerApp, made before any process starts: the run's
    checkpoint is there and readable, and the config is the checkpointed one.
    """
    from fedmtl.assembly import experiment_from_run_config
    from fedmtl.deploy.local import LocalFederation
    from fedmtl.server_app import resumable_deployment

    assert options.resume is not None
    cfg = experiment_from_run_config(LocalFederation(options).run_config())
    resumable_deployment(options.resume, cfg)


def cmd_deploy_local(args: argparse.Namespace) -> int:
    """Run the experiment on real SuperLink and SuperNode processes on this machine."""
    options = deploy_options(args)
    if options.resume is not None:
        check_resumable(options)
    try:
        deploy_local(options, run_timeout_s=args.timeout)
    except DeploymentError as exc:
        print(f"fedmtl deploy: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fedmtl deploy: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    return 0


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def cmd_deploy_stop(args: argparse.Namespace) -> int:
    """Stop what a killed ``fedmtl deploy local`` left running (from its ``pids.json``)."""
    stopped = stop_recorded(args.workdir)
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return 0


def _add_deploy_parser(sub: Any) -> None:
    deploy = sub.add_parser("deploy", help="run on real Flower SuperLink/SuperNode processes")
    actions = deploy.add_subparsers(dest="action", required=True)
    local = actions.add_parser(
        "local", help="CA, keys, SuperLink, N SuperNodes with their own data, flwr run, stop"
    )
    _add_experiment_args(local)
    local.set_defaults(experiment=None)  # with --resume: the deployment's own
    local.add_argument("--nodes", type=_at_least_one, help="SuperNodes to start (default 3)")
    local.add_argument("--tls", action=argparse.BooleanOptionalAction, help="TLS (default on)")
    local.add_argument(
        "--auth",
        action=argparse.BooleanOptionalAction,
        help="SuperNode authentication with registered keys (default on)",
    )
    local.add_argument("--workdir", help="where keys, data, logs and runs go")
    local.add_argument("--app", help="the Flower App to run (default: fedmtl's)")
    local.add_argument(
        "--round-timeout", type=float, help="seconds a round waits for replies (default 120)"
    )
    local.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a deployed run from its last checkpoint (it ran with checkpoint-every "
        ">= 1), with the options it was deployed with; --set num-rounds=N may extend it",
    )
    local.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds the whole run may take"
    )
    local.set_defaults(func=cmd_deploy_local)
    stop = actions.add_parser("stop", help="stop the processes of a killed deployment")
    stop.add_argument("workdir", help="the deployment's --workdir")
    stop.set_defaults(func=cmd_deploy_stop)


def cmd_scopes(args: argparse.Namespace) -> int:
    """Print every state_dict entry's scope and the bytes a client sends per round."""
    cfg = _load(args)
    from fedmtl.scope_table import finetune_modes_table, scope_table

    print(scope_table(cfg))
    if args.modes:
        print(f"\nevery fine-tuning mode on this experiment (task {cfg.tasks[0]}):")
        print(finetune_modes_table(cfg))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pretrain a backbone on the held-out source split and save the checkpoint."""
    from fedmtl.pretrain import pretrain_backbone

    path, meta = pretrain_backbone(
        dataset=args.dataset,
        backbone=args.backbone,
        task=args.task,
        epochs=args.epochs,
        seed=args.seed,
        out=Path(args.out) if args.out else None,
    )
    print(f"saved {path}: {meta}")
    return 0


def cmd_experiments(_: argparse.Namespace) -> int:
    """List the experiment files in simulations/."""
    for path in shipped_experiments():
        first = next(
            (ln[1:].strip() for ln in path.read_text().splitlines() if ln.startswith("#")), ""
        )
        print(f"{path.stem:<20} {first}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``fedmtl`` argument parser."""
    parser = argparse.ArgumentParser(prog="fedmtl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    simulate = sub.add_parser("simulate", help="run an experiment on Flower + Ray")
    _add_experiment_args(simulate)
    simulate.add_argument("--verbose", action="store_true", help="show Flower's own logs")
    simulate.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its last checkpoint (it ran with checkpoint-every >= 1)",
    )
    simulate.set_defaults(func=cmd_simulate)
    scopes = sub.add_parser("scopes", help="show parameter scopes and bytes per round")
    _add_experiment_args(scopes)
    scopes.add_argument(
        "--modes", action="store_true", help="also compare the fine-tuning modes (full, ...)"
    )
    scopes.set_defaults(func=cmd_scopes)
    pretrain = sub.add_parser("pretrain", help="pretrain a backbone on the source split")
    pretrain.add_argument("--dataset", default="digits")
    pretrain.add_argument("--backbone", default="digits-cnn")
    pretrain.add_argument("--task", default="digit")
    pretrain.add_argument("--epochs", type=int, default=30)
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.add_argument("--out", help="checkpoint path (default: the built-in location)")
    pretrain.set_defaults(func=cmd_pretrain)
    compare = sub.add_parser(
        "compare", help="run several strategies and seeds, with local-only and centralized"
    )
    _add_experiment_args(compare)
    compare.add_argument(
        "--strategies", nargs="+", required=True, metavar="NAME", help="strategies to compare"
    )
    compare.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED")
    compare.add_argument("--output-dir", help="where the comparison folder goes")
    compare.add_argument(
        "--no-references", action="store_true", help="skip local-only and centralized"
    )
    compare.set_defaults(func=cmd_compare)
    _add_sweep_parser(sub)
    report = sub.add_parser("report", help="rebuild tables and plots of a run or comparison")
    report.add_argument("directory", help="a run directory or a comparison directory")
    report.set_defaults(func=cmd_report)
    _add_deploy_parser(sub)
    experiments = sub.add_parser("experiments", help="list ready experiment files")
    experiments.set_defaults(func=cmd_experiments)
    return parser


def import_from_working_directory() -> None:
    """Let ``"module:Class"`` plug-ins live in the current directory, as ``python -m`` does.

    The directory goes first on ``sys.path`` (this process: the ServerApp) and on
    ``PYTHONPATH`` (processes started from here: Ray's workers run the ClientApps).
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if cwd not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([cwd, *paths])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; bad configuration exits with status 2 and names the key."""
    import_from_working_directory()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"fedmtl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
