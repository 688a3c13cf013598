"""Where a config comes from: experiment files, ``--set`` overrides, Flower's ``run_config``."""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedmtl.config.parsing import build_config, parse_override
from fedmtl.config.schema import ConfigError, ExperimentConfig

# The built-in experiments ship inside the package (``simulations/`` in a clone links
# here), so an installed fedmtl finds them without the source tree.
EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"


def shipped_experiments() -> list[Path]:
    """The experiment files that come with fedmtl (``fedmtl experiments`` lists them)."""
    return sorted(EXPERIMENTS_DIR.glob("*.toml"))


def resolve_experiment_path(name_or_path: str) -> Path:
    """Find an experiment file by path, by name in ``./simulations/``, or by built-in name."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    for folder in (Path.cwd() / "simulations", EXPERIMENTS_DIR):
        named = folder / f"{name_or_path.removesuffix('.toml')}.toml"
        if named.is_file():
            return named
    available = [p.stem for p in shipped_experiments()]
    raise ConfigError(
        "experiment",
        f"no experiment file '{name_or_path}'; give a path to a TOML file or one of {available}",
    )


def read_experiment_file(path: Path) -> dict[str, Any]:
    """Read a flat TOML experiment file."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("experiment", f"{path} is not valid TOML: {exc}") from exc


def experiment_values(
    experiment: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Raw values: the experiment file's (if any), then ``overrides`` on top."""
    values: dict[str, Any] = {}
    if experiment is not None:
        values.update(read_experiment_file(resolve_experiment_path(str(experiment))))
    values.update(overrides or {})
    return values


def load_experiment(
    experiment: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ExperimentConfig:
    """Defaults, then the experiment file, then ``overrides``; parsed and validated.

    The strategy is not checked and its scope preset not applied: a run takes
    :func:`fedmtl.assembly.load_run`, which does both.
    """
    return build_config(experiment_values(experiment, overrides))


#: Run-config keys of a deployment's run directory, not experiment keys: ``run-dir``
#: (where the ServerApp writes the run) and ``resume`` (a run directory to continue
#: from its checkpoint); see :func:`deployment_run_dir`.
RUN_DIR_KEY, RESUME_KEY = "run-dir", "resume"
DEPLOYMENT_RUN_KEYS = (RUN_DIR_KEY, RESUME_KEY)


def deployment_run_dir(run_config: Mapping[str, Any]) -> tuple[str | None, bool]:
    """The run directory Flower's ``run_config`` names, and whether to resume it.

    ``resume = "<run dir>"`` continues that run; ``run-dir = "<dir>"`` starts a
    new run there; neither: ``(None, False)`` (a new timestamped directory).

    Raises
    ------
    ConfigError
        When a key is not a non-empty string, or both are given and differ.
    """
    given = {}
    for key in DEPLOYMENT_RUN_KEYS:
        value = run_config.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a directory path (a string), got {value!r}")
        given[key] = value
    resume, run_dir = given.get(RESUME_KEY), given.get(RUN_DIR_KEY)
    if resume is not None and run_dir is not None and resume != run_dir:
        raise ConfigError(
            RUN_DIR_KEY, f"'{run_dir}' differs from resume '{resume}': give only resume"
        )
    if resume is not None:
        return resume, True
    return run_dir, False


def run_config_values(run_config: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The experiment named by Flower's ``run_config`` and its overrides.

    The key ``experiment`` names the file; ``overrides`` holds space-separated
    ``key=value`` pairs (the syntax of ``--set``); any other key is an override too,
    except the deployment's run directory keys (:data:`DEPLOYMENT_RUN_KEYS`).
    """
    values = {k: v for k, v in run_config.items() if k not in DEPLOYMENT_RUN_KEYS}
    experiment = values.pop("experiment", None)
    overrides = dict(parse_override(t) for t in shlex.split(str(values.pop("overrides", ""))))
    # Flower flattens nothing else for us: any other key is an override too.
    return (str(experiment) if experiment else None), {**values, **overrides}


def config_from_run_config(run_config: Mapping[str, Any]) -> ExperimentConfig:
    """Parse the config of Flower's ``run_config`` (``flwr run .``), see :func:`run_config_values`.

    The apps take :func:`fedmtl.assembly.experiment_from_run_config`, which also
    resolves the strategy's scope preset.
    """
    experiment, overrides = run_config_values(run_config)
    return load_experiment(experiment, overrides)
