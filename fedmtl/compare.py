"""``fedmtl compare``: several strategies and seeds on one experiment, with references.

Every (strategy, seed) is a full simulation (``fedmtl simulate``) in this
process, one after another; the runs share one feature cache directory, so a
frozen backbone's features are computed once for all of them. Flower's Ray
backend shuts Ray down at the end of each ``run_simulation``, so each run
starts its own Ray session. Two references come with the strategies:

* ``local-only`` (each client trains alone: a federated strategy should beat
  it), run as a strategy like the others;
* ``centralized`` (all clients' data pooled into one multi-task model, see
  :mod:`fedmtl.centralized`): the upper reference.

Outputs, in ``<output-dir>/compare-<name>-<timestamp>/``: ``results.json``,
``compare.md``, ``compare.csv`` and ``plots/``; their format and the tables
are :mod:`fedmtl.results.compare`'s. ``fedmtl report <compare dir>`` rebuilds
the tables and plots from ``results.json``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedmtl.assembly import load_run
from fedmtl.config import ExperimentConfig
from fedmtl.results.compare import (
    CENTRALIZED,
    LOCAL_ONLY,
    run_entry,
    write_comparison_report,
    write_comparison_results,
)


def run_comparison(
    experiment: str,
    strategies: Sequence[str],
    seeds: Sequence[int],
    overrides: Mapping[str, Any] | None = None,
    output_dir: Path | None = None,
    references: bool = True,
    simulate: Callable[[ExperimentConfig], Path] | None = None,
) -> Path:
    """Run every strategy for every seed; write results, tables and plots; return the folder.

    Parameters
    ----------
    experiment : str
        Experiment file or name in ``simulations/``.
    strategies : sequence of str
        Strategy names (or ``package.module:ClassName``).
    seeds : sequence of int
        Seeds; each one changes data partition, initial heads and sampling.
    overrides : mapping, optional
        Experiment keys applied to every run.
    output_dir : Path, optional
        Where the comparison folder goes (default: the experiment's ``output-dir``).
    references : bool
        Add ``local-only`` (if missing) and the centralized reference.
    simulate : callable, optional
        Runs one config and returns its run directory (default:
        :func:`fedmtl.simulation.simulate`).
    """
    from fedmtl.centralized import train_centralized

    if simulate is None:
        from fedmtl.simulation import simulate as simulate_on_ray

        simulate = simulate_on_ray
    base = load_run(experiment, overrides)
    root = Path(output_dir or base.output_dir)
    folder = root / f"compare-{base.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True)
    names = list(dict.fromkeys(strategies))
    if references and LOCAL_ONLY not in names:
        names.append(LOCAL_ONLY)
    results: dict[str, Any] = {
        "experiment": experiment,
        "overrides": dict(overrides or {}),
        "seeds": list(seeds),
        "strategies": names + ([CENTRALIZED] if references else []),
        "runs": {},
    }
    cache = base.feature_cache_dir or str((folder / "feature-cache").resolve())
    for seed in seeds:
        for name in names:
            values = {**(overrides or {}), "strategy": name, "seed": seed}
            values.update({"output-dir": str(folder / "runs"), "feature-cache-dir": cache})
            cfg = load_run(experiment, values)
            print(f"compare: {name}, seed {seed}", flush=True)
            run_dir = simulate(cfg)
            entry = run_entry(run_dir)
            if entry["failure"]:
                print(f"compare: {name}, seed {seed} failed: {entry['failure']}", flush=True)
            results["runs"].setdefault(name, {})[str(seed)] = entry
            write_comparison_results(folder, results)  # what finished so far stays on disk
        if references:
            cfg = dataclasses.replace(base, seed=seed)
            print(f"compare: centralized reference, seed {seed}", flush=True)
            central = train_centralized(cfg)
            results["runs"].setdefault(CENTRALIZED, {})[str(seed)] = {
                "final": central["tasks"],
                "learning-rate": central["learning-rate"],
                "epochs": central["epochs"],
            }
            write_comparison_results(folder, results)
    write_comparison_report(folder)
    return folder
