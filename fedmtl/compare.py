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

It is a sweep over ``strategy`` (:mod:`fedmtl.sweeps`): every (strategy,
seed) is planned and validated before the first run, the folder
``<output-dir>/compare-<name>-<hash>/`` is found again from the command, and a
repeated command skips the finished runs (and a centralized reference already
in ``results.json``). Outputs: ``results.json``, ``compare.md``,
``compare.csv`` and ``plots/``, their format and the tables
:mod:`fedmtl.results.compare`'s; the runs are in the sweep's slots under
``runs/``. ``fedmtl report <compare dir>`` rebuilds the tables and plots from
``results.json``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedmtl.results.compare import (
    CENTRALIZED,
    LOCAL_ONLY,
    run_entry,
    write_comparison_report,
    write_comparison_results,
)
from fedmtl.results.files import COMPARISON_RESULTS_FILE
from fedmtl.sweeps import (
    Simulate,
    check_planned_inputs,
    default_simulate,
    plan_sweep,
    run_planned,
)


def run_comparison(
    experiment: str,
    strategies: Sequence[str],
    seeds: Sequence[int],
    overrides: Mapping[str, Any] | None = None,
    output_dir: Path | None = None,
    references: bool = True,
    simulate: Simulate | None = None,
    log: Callable[[str], None] = print,
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
    log : callable
        Where progress lines go (default: ``print``).
    """
    from fedmtl.centralized import train_centralized

    simulate = simulate or default_simulate()
    names = list(dict.fromkeys(strategies))
    if references and LOCAL_ONLY not in names:
        names.append(LOCAL_ONLY)
    plan = plan_sweep(
        experiment, [("strategy", names)], seeds, overrides, output_dir, prefix="compare"
    )  # every run validated here, before the first one starts
    check_planned_inputs(plan.runs)
    folder = plan.folder
    folder.mkdir(parents=True, exist_ok=True)
    plan.manifest.write()
    results: dict[str, Any] = {
        "experiment": experiment,
        "overrides": dict(overrides or {}),
        "seeds": list(seeds),
        "strategies": names + ([CENTRALIZED] if references else []),
        "runs": {},
    }
    saved = folder / COMPARISON_RESULTS_FILE
    done = json.loads(saved.read_text()).get("runs", {}) if saved.exists() else {}
    for seed in seeds:
        for planned in (p for p in plan.runs if p.run.seed == seed):
            name = planned.cfg.strategy

            def tagged(text: str, name: str = name) -> None:
                log(f"compare: {name}: {text}")

            run_dir, _ = run_planned(planned, simulate, tagged)
            entry = run_entry(run_dir)
            if entry["failure"]:
                log(f"compare: {name}, seed {seed} failed: {entry['failure']}")
            results["runs"].setdefault(name, {})[str(seed)] = entry
            write_comparison_results(folder, results)  # what finished so far stays on disk
        if references:
            central = done.get(CENTRALIZED, {}).get(str(seed))
            if central is None:
                log(f"compare: centralized reference, seed {seed}")
                trained = train_centralized(dataclasses.replace(plan.base, seed=seed))
                central = {
                    "final": trained["tasks"],
                    "learning-rate": trained["learning-rate"],
                    "epochs": trained["epochs"],
                }
            else:
                log(f"compare: centralized reference, seed {seed}: skipped (in results.json)")
            results["runs"].setdefault(CENTRALIZED, {})[str(seed)] = central
            write_comparison_results(folder, results)
    write_comparison_report(folder)
    return folder
