"""The Python API for notebooks: run or load a run, run or load a sweep, get tables back.

>>> import fedmtl
>>> result = fedmtl.run("digits", num_rounds=3, strategy="fedper")  # doctest: +SKIP
>>> result.rounds  # one row per round, phase and task: accuracy-mean, accuracy-worst, ...
>>> sweep = fedmtl.sweep("digits", {"dirichlet-alpha": [0.1, 1.0]}, seeds=[0, 1])
>>> sweep.table  # one row per grid point and task: mean, sd, worst, seeds

Tables are pandas DataFrames when pandas is installed (``pip install
fedmtl[api]``), else plain lists of dicts with the same columns. Override keys
are python names (``num_rounds``) or kebab keys (``**{"num-rounds": 3}``).
Everything is read through :mod:`fedmtl.results`; the run directory stays the
source of truth. Nothing heavy (torch, Ray, Flower) is imported until a
function runs.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedmtl.config import ExperimentConfig

#: A pandas DataFrame, or a list of dicts (one per row) without pandas.
Table = Any


def table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """``rows`` as a DataFrame when pandas is installed, else as a list of dicts."""
    try:
        import pandas as pd
    except ImportError:
        return [dict(row) for row in rows]
    return pd.DataFrame([dict(row) for row in rows])


def _keys(values: Mapping[str, Any]) -> dict[str, Any]:
    from fedmtl.sweeps import normalize_key

    return {normalize_key(key): value for key, value in values.items()}


def round_rows(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A run's per-round per-task rows and per-round per-client rows (both phases).

    Task rows: ``round``, ``phase`` (``evaluate`` or ``train``), ``task`` and the
    task's statistics (``accuracy-mean``, ``accuracy-worst``, ``loss-mean``, ...).
    Client rows: ``round``, ``phase``, then the client's row (``client-id``,
    ``task``, ``num-examples``, ``accuracy``, ``loss``, ...). Round 0 is the
    initial evaluation.
    """
    from fedmtl.results import RunDirectory

    tasks, clients = [], []
    for record in RunDirectory(run_dir).rounds():
        for phase in ("evaluate", "train"):
            section = record.evaluate if phase == "evaluate" else record.train
            for task, stats in section.tasks.items():
                tasks.append({"round": record.round, "phase": phase, "task": task, **stats})
            for row in section.clients:
                clients.append({"round": record.round, "phase": phase, **row.to_json()})
    return tasks, clients


@dataclass(frozen=True)
class RunResult:
    """One run, read from its directory.

    Attributes
    ----------
    run_dir : pathlib.Path
        The run directory.
    summary : dict
        ``summary.json`` (``{}`` for a run that stopped before writing it).
    config : dict
        ``config.toml``: the resolved experiment (kebab keys).
    rounds : Table
        Per round, phase and task: the task's statistics (see :func:`round_rows`).
    clients : Table
        Per round, phase and client (one row per task held): its metrics.
    """

    run_dir: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    rounds: Table = field(repr=False)
    clients: Table = field(repr=False)

    @property
    def ok(self) -> bool:
        """Whether the run finished and trained (``summary.json`` says ``"status": "ok"``)."""
        return self.summary.get("status") == "ok"


def load(run_dir: str | Path) -> RunResult:
    """Read a run directory (finished, or partial: its rounds so far).

    Raises
    ------
    FileNotFoundError
        When the folder holds no ``config.toml`` (it is not a fedmtl run).
    """
    from fedmtl.results import CONFIG_FILE, RunDirectory

    path = Path(run_dir)
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: '{path}' is not a fedmtl run")
    run = RunDirectory(path)
    tasks, clients = round_rows(path) if run.metrics_file.exists() else ([], [])
    return RunResult(
        run_dir=path,
        summary=run.summary(),
        config=tomllib.loads(config_file.read_text()),
        rounds=table(tasks),
        clients=table(clients),
    )


def _config(
    config_or_path: str | Path | Mapping[str, Any] | ExperimentConfig | None,
    overrides: Mapping[str, Any],
) -> ExperimentConfig:
    from fedmtl.assembly import load_run
    from fedmtl.config import ExperimentConfig

    values = _keys(overrides)
    if isinstance(config_or_path, ExperimentConfig):
        return load_run(None, {**config_or_path.to_dict(), **values})
    if isinstance(config_or_path, Mapping):
        return load_run(None, {**_keys(config_or_path), **values})
    return load_run(config_or_path, values)


def run(
    config_or_path: str | Path | Mapping[str, Any] | ExperimentConfig | None = "digits",
    /,
    **overrides: Any,
) -> RunResult:
    """Run one experiment on the Ray simulation runtime and read it back.

    Parameters
    ----------
    config_or_path : str, Path, mapping or ExperimentConfig
        An experiment file or name in ``simulations/`` (default ``digits``), a
        mapping of experiment keys, or a config; ``None``: the built-in defaults.
    **overrides
        Experiment keys on top (``num_rounds=3`` or ``**{"num-rounds": 3}``).

    Returns
    -------
    RunResult
        A failed run is returned too: check :attr:`RunResult.ok` and ``summary["failure"]``.

    Raises
    ------
    ConfigError
        For a bad key or value, naming the key, before anything runs.
    """
    from fedmtl.simulation import simulate

    return load(simulate(_config(config_or_path, overrides)))


@dataclass(frozen=True)
class SweepResult:
    """A sweep (or a comparison), read from its folder.

    Attributes
    ----------
    sweep_dir : pathlib.Path
        The sweep folder.
    keys : tuple of str
        The swept keys.
    table : Table
        The results table: one row per grid point and task (swept keys, ``task``,
        ``metric``, ``mean``, ``sd``, ``worst``, ``seeds``), as ``sweep.csv``.
    runs : Table
        One row per (point, seed): ``point``, the swept keys, ``seed``,
        ``state`` (finished, partial, failed, missing) and ``run-dir``
        (read one with :func:`load`).
    rounds : Table
        Every finished run's per-round per-task rows (:func:`round_rows`),
        with the swept keys and ``seed`` in front.
    """

    sweep_dir: Path
    keys: tuple[str, ...]
    table: Table = field(repr=False)
    runs: Table = field(repr=False)
    rounds: Table = field(repr=False)


def load_sweep(sweep_dir: str | Path) -> SweepResult:
    """Read a sweep folder (``sweep.json`` and its runs); unfinished runs have no rows.

    Raises
    ------
    FileNotFoundError
        When the folder holds no ``sweep.json``.
    """
    from fedmtl.results.sweep import FINISHED, SweepManifest, point_finals, sweep_rows

    manifest = SweepManifest.read(Path(sweep_dir))
    runs, rounds = [], []
    for entry in manifest.runs:
        run_dir, state = entry.run_dir, entry.state
        runs.append(
            {
                "point": entry.point,
                **entry.values,
                "seed": entry.seed,
                "state": state,
                "run-dir": None if run_dir is None else str(run_dir),
            }
        )
        if run_dir is not None and state == FINISHED:
            tasks, _ = round_rows(run_dir)
            rounds += [{**entry.values, "seed": entry.seed, **row} for row in tasks]
    return SweepResult(
        sweep_dir=manifest.folder,
        keys=manifest.keys,
        table=table(sweep_rows(point_finals(manifest), manifest.metric)),
        runs=table(runs),
        rounds=table(rounds),
    )


def sweep(
    experiment: str | Path,
    grid: Mapping[str, Sequence[Any]] | Sequence[tuple[str, Sequence[Any]]],
    seeds: Sequence[int] = (0,),
    *,
    output_dir: str | Path | None = None,
    metric: str | None = None,
    plot_key: str | None = None,
    **overrides: Any,
) -> SweepResult:
    """Run a sweep (every grid combination times ``seeds``) and read it back.

    The same call again skips the finished runs (see :mod:`fedmtl.sweeps`).

    Parameters
    ----------
    experiment : str or Path
        Experiment file or name in ``simulations/``.
    grid : mapping of key to values, or sequence of (key, values)
        The swept keys (python names or kebab keys) and their values.
    seeds : sequence of int
        Every grid point runs once per seed.
    output_dir : str or Path, optional
        Where the sweep folder goes (default: the experiment's ``output-dir``).
    metric : str, optional
        The table's metric (default: each task's primary metric, accuracy).
    plot_key : str, optional
        The swept key on the plot's x axis (default: the first).
    **overrides
        Experiment keys applied to every run.

    Raises
    ------
    ConfigError
        For a bad key or value at any grid point, before anything runs.
    """
    from fedmtl.sweeps import run_sweep

    pairs = list(grid.items()) if isinstance(grid, Mapping) else list(grid)
    folder = run_sweep(
        str(experiment),
        [(key, list(values)) for key, values in pairs],
        list(seeds),
        _keys(overrides),
        Path(output_dir) if output_dir is not None else None,
        metric=metric,
        plot_key=plot_key,
    )
    return load_sweep(folder)
