"""Run assembly: from a parsed config to the run it describes (strategy and scopes).

:mod:`fedmtl.config` only parses. Before a run starts, and in each Flower app
that reads ``run_config``, the config goes through :func:`resolve_run`: the
strategy is built once with its options (a bad name or option stops here,
naming the key) and, with ``scopes-from = "strategy"``, the strategy's
:class:`~fedmtl.scopes.ScopePreset` is written into the ``scope-*`` keys. The
resolved config records ``scopes-from = "experiment"``, so resolving it again
changes nothing and its ``config.toml`` re-runs with the same scopes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.serverapp.strategy import Strategy

from fedmtl.config import (
    ConfigError,
    ExperimentConfig,
    config_from_run_config,
    load_experiment,
)
from fedmtl.config.schema import suggest
from fedmtl.privacy import check_strategy
from fedmtl.scopes import ScopePreset
from strategies import available_strategies
from strategies.registry import (
    Sampling,
    StrategyOptionError,
    build_strategy,
    strategy_scope_preset,
)


def run_sampling(cfg: ExperimentConfig) -> Sampling:
    """How many nodes each round of ``cfg`` trains and evaluates on."""
    return Sampling(cfg.fraction_train, cfg.fraction_evaluate, cfg.expected_clients)


def build_inner_strategy(cfg: ExperimentConfig) -> Strategy:
    """The run's Flower strategy: ``strategy`` with ``strategy-options`` and the run's sampling.

    Raises
    ------
    ConfigError
        Naming ``strategy`` (unknown name, import failure, bad scope preset) or
        ``strategy-options`` (an option it does not take or rejects).
    """
    names = available_strategies()
    if cfg.strategy not in names and ":" not in cfg.strategy:
        raise ConfigError(
            "strategy",
            f"'{cfg.strategy}' is not a registered strategy; allowed: {names} "
            f"or 'package.module:ClassName'{suggest(cfg.strategy, names)}",
        )
    try:
        return build_strategy(cfg.strategy, cfg.strategy_options, run_sampling(cfg))
    except StrategyOptionError as exc:
        raise ConfigError("strategy-options" if exc.options else "strategy", str(exc)) from None


def apply_scope_preset(cfg: ExperimentConfig, preset: ScopePreset) -> ExperimentConfig:
    """``cfg`` with ``preset`` in its ``scope-*`` keys, recorded as ``scopes-from = "experiment"``.

    The preset's frozen patterns come after the run's own; its other rules and
    default replace the run's.
    """
    return dataclasses.replace(
        cfg,
        scope_frozen=cfg.scope_frozen + preset.frozen,
        scope_local=preset.local,
        scope_task=preset.task,
        scope_shared=preset.shared,
        scope_default=preset.default,
        scopes_from="experiment",
    )


def resolve_run(cfg: ExperimentConfig) -> ExperimentConfig:
    """The config a run uses: its strategy checked, its scope preset applied (idempotent).

    Raises
    ------
    ConfigError
        For a strategy that cannot be built with its options, or that the run's
        differential privacy refuses (:func:`fedmtl.privacy.check_strategy`), naming the key.
    """
    # Built once and dropped: a bad option (or one differential privacy refuses) fails here.
    check_strategy(cfg, build_inner_strategy(cfg))
    preset = strategy_scope_preset(cfg.strategy)
    if cfg.scopes_from != "strategy" or preset is None:
        return cfg
    return apply_scope_preset(cfg, preset)


@functools.lru_cache(maxsize=8)
def resolved(cfg: ExperimentConfig) -> ExperimentConfig:
    """:func:`resolve_run`, cached per config: what every entry point of a run calls.

    The ServerApp and the ClientApp handlers resolve what they are given, so a
    config that skipped :func:`resolve_run` still gets its strategy's scopes on
    both sides (resolving a resolved config changes nothing).
    """
    return resolve_run(cfg)


def load_run(
    experiment: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ExperimentConfig:
    """:func:`fedmtl.config.load_experiment`, resolved for a run."""
    return resolve_run(load_experiment(experiment, overrides))


def experiment_from_run_config(run_config: Mapping[str, Any]) -> ExperimentConfig:
    """The resolved config of Flower's ``run_config``: what the ServerApp and ClientApps use.

    Both apps call this one function, so they agree on the scopes.
    """
    return resolved(config_from_run_config(run_config))
