"""Experiment configuration: a pure parser from keys and values to a frozen config.

An experiment is the built-in defaults (the fields of :class:`ExperimentConfig`)
overlaid by a flat TOML file (``simulations/*.toml``) and then by overrides
(``--set key=value`` on the command line, or Flower's ``run_config``). Keys are
kebab-case (``num-rounds``); the dataclass fields are their snake_case twins.
This package is the only reader of ``run_config``: everything downstream takes
the frozen :class:`ExperimentConfig`.

It parses and validates (types, finite numbers, ranges, choices, rules between
keys and against the dataset and backbone registries) and never imports
``strategies``: checking the strategy and applying its scope preset is run
assembly (:mod:`fedmtl.assembly`).

Modules, one job each: :mod:`~fedmtl.config.schema` (the dataclass and
:class:`ConfigError`), :mod:`~fedmtl.config.parsing` (values to a config),
:mod:`~fedmtl.config.rules` (rules between keys), :mod:`~fedmtl.config.experiments`
(files, overrides, ``run_config``), :mod:`~fedmtl.config.views` (what the data
and model layers take from a config).
"""

from fedmtl.config.experiments import (
    DEPLOYMENT_RUN_KEYS,
    EXPERIMENTS_DIR,
    RESUME_KEY,
    RUN_DIR_KEY,
    config_from_run_config,
    deployment_run_dir,
    experiment_values,
    load_experiment,
    read_experiment_file,
    resolve_experiment_path,
    run_config_values,
    shipped_experiments,
)
from fedmtl.config.parsing import CHOICES, RANGES, build_config, parse_override
from fedmtl.config.schema import SCOPES, ConfigError, ExperimentConfig, known_keys
from fedmtl.config.views import partition_spec, scope_rules

__all__ = [
    "CHOICES",
    "DEPLOYMENT_RUN_KEYS",
    "EXPERIMENTS_DIR",
    "RANGES",
    "RESUME_KEY",
    "RUN_DIR_KEY",
    "SCOPES",
    "ConfigError",
    "ExperimentConfig",
    "build_config",
    "config_from_run_config",
    "deployment_run_dir",
    "experiment_values",
    "known_keys",
    "load_experiment",
    "parse_override",
    "partition_spec",
    "read_experiment_file",
    "resolve_experiment_path",
    "run_config_values",
    "scope_rules",
    "shipped_experiments",
]
