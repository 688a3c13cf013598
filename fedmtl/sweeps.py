"""``fedmtl sweep``: any experiment keys over a grid, times seeds; resumable; one table.

A sweep is planned before anything runs: every (grid point, seed)'s config is
built and validated (:func:`plan_sweep`), so a wrong key or value stops the
sweep, naming the key, with nothing run. Its folder is found again from the
command: ``<output-dir>/sweep-<name>-<hash>/``, the hash over the experiment,
grid, seeds and overrides. Each (point, seed) has a stable slot folder
(:mod:`fedmtl.results.sweep`); running the same command again skips the
finished runs, resumes a killed run from its checkpoint when it saved one, and
reruns a failed one. All runs share one feature-cache directory.

``fedmtl compare`` is this machinery over the ``strategy`` key
(:mod:`fedmtl.compare`), plus its references.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fedmtl.assembly import load_run
from fedmtl.config import ConfigError, ExperimentConfig, known_keys
from fedmtl.config.schema import suggest
from fedmtl.results.sweep import (
    FAILED,
    FINISHED,
    MISSING,
    RUNS_DIR,
    SweepManifest,
    SweepRun,
    resumable,
    slot_run,
    write_sweep_report,
)

# Keys a sweep sets itself for every run.
RESERVED = {
    "seed": "seeds are given with --seeds",
    "output-dir": "each run's folder is its slot in the sweep folder",
    "feature-cache-dir": "the runs share one feature cache; set it with --set",
}


class Simulate(Protocol):
    """Runs one config and returns its run directory (:func:`fedmtl.simulation.simulate`)."""

    def __call__(
        self, cfg: ExperimentConfig, *, run_dir: Path | None = None, resume: bool = False
    ) -> Path:
        """Run ``cfg`` (continue ``run_dir`` with ``resume``)."""
        ...


def _split_items(text: str) -> list[str]:
    """Split ``a, [b, c], "d,e"`` at its top-level commas."""
    items: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    items.append("".join(current).strip())
    return [item for item in items if item]


def parse_value(raw: str) -> Any:
    """One value as ``--set`` reads it: TOML (number, boolean, list, quoted string), else text."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def parse_grid(text: str) -> tuple[str, tuple[Any, ...]]:
    """Parse one ``--grid key=[v1,v2,...]``; each value is read like a ``--set`` value.

    ``key=[0.1,1.0]`` gives floats, ``key=[fedavg,fedper]`` strings,
    ``key=[true,false]`` booleans, ``key=[["a"],["a","b"]]`` lists; without
    brackets, ``key=v`` is a one-value grid.

    Raises
    ------
    ConfigError
        Naming ``grid`` when the text is not ``key=[...]`` or the list is empty.
    """
    if "=" not in text:
        raise ConfigError("grid", f"a grid must look like key=[v1,v2], got {text!r}")
    key, raw = (part.strip() for part in text.split("=", 1))
    if raw.startswith("[") and raw.endswith("]"):
        values = [parse_value(item) for item in _split_items(raw[1:-1])]
    else:
        values = [parse_value(raw)]
    if not key or not values:
        raise ConfigError("grid", f"'{text}' names no key or no values")
    return key, tuple(values)


def normalize_key(key: str) -> str:
    """An experiment key from a python name or a kebab key (``num_rounds`` -> ``num-rounds``)."""
    return key.replace("_", "-")


def check_grid(grid: Sequence[tuple[str, Sequence[Any]]]) -> None:
    """Raise :class:`ConfigError` for no grid, a repeated, reserved or unknown key, or no values."""
    if not grid:
        raise ConfigError("grid", "a sweep needs at least one --grid key=[v1,v2]")
    names = known_keys()
    seen: set[str] = set()
    for key, values in grid:
        if key in RESERVED:
            raise ConfigError(key, f"cannot be swept with --grid: {RESERVED[key]}")
        if key not in names:
            raise ConfigError(key, f"unknown key{suggest(key, names)}; known keys: {names}")
        if key in seen:
            raise ConfigError(key, "appears in two --grid options; give its values once")
        if not values:
            raise ConfigError(key, "a grid key needs at least one value")
        seen.add(key)


def sweep_hash(settings: Mapping[str, Any], grid: Sequence[tuple[str, Sequence[Any]]]) -> str:
    """8 hex digits naming a sweep: its resolved base settings and its grid.

    ``settings`` is the base config (the experiment file's content with the
    ``--set`` overrides), so editing the file gives a new folder instead of
    counting old runs as finished. Seeds are not part of it: adding a seed
    later reuses the finished runs of the others (each seed has its own slot).
    """
    text = json.dumps(
        {"settings": dict(settings), "grid": [[k, list(v)] for k, v in grid]},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def point_label(index: int, values: Mapping[str, Any]) -> str:
    """A point's folder name: its index, then ``key=value`` pairs (file-name safe)."""
    text = ",".join(
        f"{k}={json.dumps(v) if isinstance(v, list | tuple) else v}" for k, v in values.items()
    )
    return f"{index:02d}-" + re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)[:120]


@dataclass(frozen=True)
class PlannedRun:
    """One (grid point, seed): its validated config and its record in ``sweep.json``."""

    run: SweepRun
    cfg: ExperimentConfig


@dataclass(frozen=True)
class SweepPlan:
    """Every run of a sweep, validated, with the folder it writes to."""

    manifest: SweepManifest
    runs: tuple[PlannedRun, ...]
    base: ExperimentConfig

    @property
    def folder(self) -> Path:
        """The sweep folder."""
        return self.manifest.folder


def plan_sweep(
    experiment: str,
    grid: Sequence[tuple[str, Sequence[Any]]],
    seeds: Sequence[int],
    overrides: Mapping[str, Any] | None = None,
    output_dir: Path | None = None,
    metric: str | None = None,
    plot_key: str | None = None,
    prefix: str = "sweep",
) -> SweepPlan:
    """Build and validate every (point, seed)'s config; nothing is run or written.

    Runs are ordered seed by seed, each seed over every point in grid order
    (the last key varies fastest).

    Raises
    ------
    ConfigError
        For a bad grid, override or value, naming the key (with the grid point
        for a value only one point has wrong).
    """
    overrides = dict(overrides or {})
    axes = [(normalize_key(k), tuple(v)) for k, v in grid]
    check_grid(axes)
    if plot_key is not None and normalize_key(plot_key) not in [k for k, _ in axes]:
        raise ConfigError(
            "plot-key", f"'{plot_key}' is not a swept key; swept: {[k for k, _ in axes]}"
        )
    if not seeds:
        raise ConfigError("seeds", "a sweep needs at least one seed")
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise ConfigError("seeds", f"{repeated} given more than once; give each seed once")
    base = load_run(experiment, overrides)
    name = f"{prefix}-{base.name}-{sweep_hash(base.to_dict(), axes)}"
    folder = Path(output_dir or base.output_dir) / name
    cache = base.feature_cache_dir or str((folder / "feature-cache").resolve())
    points: list[dict[str, Any]] = [{}]
    for key, choices in axes:
        points = [{**p, key: v} for p in points for v in choices]
    planned = []
    for seed in seeds:
        for index, values in enumerate(points):
            slot = folder / RUNS_DIR / point_label(index, values) / f"seed-{seed}"
            run_values = {**overrides, **values, "seed": seed}
            run_values.update({"output-dir": str(slot), "feature-cache-dir": cache})
            try:
                cfg = load_run(experiment, run_values)
            except ConfigError as exc:
                raise at_point(exc, values, seed) from None
            planned.append(PlannedRun(SweepRun(index, values, seed, slot), cfg))
    manifest = SweepManifest(
        folder=folder,
        experiment=experiment,
        keys=tuple(k for k, _ in axes),
        grid=tuple(v for _, v in axes),
        seeds=tuple(seeds),
        overrides=overrides,
        metric=metric,
        plot_key=normalize_key(plot_key) if plot_key else None,
        runs=tuple(p.run for p in planned),
    )
    return SweepPlan(manifest, tuple(planned), base)


def at_point(exc: ConfigError, values: Mapping[str, Any], seed: int) -> ConfigError:
    """``exc`` with the grid point and seed it came from added to its message."""
    where = ", ".join(f"{k}={v}" for k, v in values.items())
    return ConfigError(exc.key, f"{_reason(exc)} (grid point {where}, seed {seed})")


def check_planned_inputs(runs: Sequence[PlannedRun]) -> None:
    """Load each unfinished run's data and initial model before the first run starts.

    :func:`plan_sweep` checks keys and values; this finds what only loading shows
    (a missing weights file, more clients than examples), so a bad grid point
    stops the sweep before any run, not after the runs before it.
    """
    from fedmtl.run_model import check_run_inputs  # torch: only when a sweep runs

    for planned in runs:
        if planned.run.state == FINISHED:
            continue
        try:
            check_run_inputs(planned.cfg)
        except ConfigError as exc:
            raise at_point(exc, planned.run.values, planned.run.seed) from None


def _reason(exc: ConfigError) -> str:
    """The message of a :class:`ConfigError` without its ``config key 'k': `` prefix."""
    return str(exc).removeprefix(f"config key '{exc.key}': ")


def describe(run: SweepRun) -> str:
    """``key=value, ..., seed s`` of one run."""
    return ", ".join([*(f"{k}={v}" for k, v in run.values.items()), f"seed {run.seed}"])


def run_planned(
    planned: PlannedRun, simulate: Simulate, log: Callable[[str], None] = print
) -> tuple[Path, bool]:
    """Run one (point, seed) unless it finished; return its run directory and whether it ran.

    A finished run (``summary.json`` present and ok) is skipped; a killed run
    with a checkpoint continues from it; a failed or killed run without one is
    run again in a new run directory of its slot (the old one stays).
    """
    run = planned.run
    state = run.state
    existing = slot_run(run.slot)
    if state == FINISHED and existing is not None:
        log(f"skipped (finished): {describe(run)}: {existing}")
        return existing, False
    if existing is not None and state != FAILED and resumable(existing):
        log(f"resuming from its checkpoint: {describe(run)}: {existing}")
        return simulate(planned.cfg, run_dir=existing, resume=True), True
    if state != MISSING:
        log(f"running again ({state}): {describe(run)}")
    else:
        log(f"running: {describe(run)}")
    return simulate(planned.cfg), True


def default_simulate() -> Simulate:
    """:func:`fedmtl.simulation.simulate` (imported only when a sweep runs)."""
    from fedmtl.simulation import simulate

    return simulate


def execute_sweep(
    plan: SweepPlan, simulate: Simulate | None = None, log: Callable[[str], None] = print
) -> list[Path]:
    """Write ``sweep.json``, run what is not finished, write the table and plots.

    Returns the files of the report (``sweep.csv``, ``sweep.md``, the plot).
    """
    simulate = simulate or default_simulate()
    check_planned_inputs(plan.runs)
    plan.folder.mkdir(parents=True, exist_ok=True)
    plan.manifest.write()
    ran = 0
    total = len(plan.runs)
    for index, planned in enumerate(plan.runs, 1):

        def tagged(text: str, index: int = index) -> None:
            log(f"sweep [{index}/{total}] {text}")

        _, did_run = run_planned(planned, simulate, tagged)
        ran += did_run
    log(f"sweep: {ran} run(s) ran, {total - ran} skipped as finished")
    return write_sweep_report(plan.folder)


def run_sweep(
    experiment: str,
    grid: Sequence[tuple[str, Sequence[Any]]],
    seeds: Sequence[int],
    overrides: Mapping[str, Any] | None = None,
    output_dir: Path | None = None,
    metric: str | None = None,
    plot_key: str | None = None,
    simulate: Simulate | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Plan (validate every run), run what is not finished, write the table; return the folder.

    Parameters
    ----------
    experiment : str
        Experiment file or name in ``simulations/``.
    grid : sequence of (key, values)
        Swept experiment keys and their values; every combination is a point.
    seeds : sequence of int
        Seeds; every point runs once per seed.
    overrides : mapping, optional
        Experiment keys applied to every run.
    output_dir : Path, optional
        Where the sweep folder goes (default: the experiment's ``output-dir``).
    metric : str, optional
        The table's metric (default: each task's primary metric).
    plot_key : str, optional
        The swept key on the plot's x axis (default: the first).
    simulate : callable, optional
        Runs one config (default: :func:`fedmtl.simulation.simulate`).
    log : callable
        Where progress lines go (default: ``print``).
    """
    plan = plan_sweep(experiment, grid, seeds, overrides, output_dir, metric, plot_key)
    execute_sweep(plan, simulate, log)
    return plan.folder
