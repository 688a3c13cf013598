"""Keys and values to a frozen config: types, finite numbers, ranges and choices.

:func:`build_config` is a pure parser: it reads values, never builds a strategy
or a model. What needs the strategy (its options, its scope preset) is run
assembly's job (:mod:`fedmtl.assembly`).
"""

from __future__ import annotations

import math
import tomllib
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any

from fedmtl.config.rules import validate_cross_keys
from fedmtl.config.schema import (
    SCOPES,
    ConfigError,
    ExperimentConfig,
    field_of,
    known_keys,
    suggest,
)
from fedmtl.data.assignment import TASK_ASSIGNMENTS
from fedmtl.data.partitioners import PARTITIONERS
from fedmtl.data.shifts import SHIFT_CHOICES
from fedmtl.poisoning import ATTACKS
from fedmtl.private_training import ACCOUNTANTS
from fedmtl.scopes import FINETUNE_MODES
from fedmtl.task_weighting import TASK_WEIGHTINGS
from fedmtl.training import OPTIMIZERS

# Allowed values of string-valued keys. A registry is read at validation time
# (iterating it gives its names), so plug-in registrations count.
CHOICES: dict[str, Collection[str]] = {
    "task-assignment": TASK_ASSIGNMENTS,
    "partitioner": PARTITIONERS,
    "optimizer": OPTIMIZERS,
    "task-weighting": TASK_WEIGHTINGS,
    "device": ("auto", "cpu", "cuda"),
    "scope-default": SCOPES,
    "finetune": FINETUNE_MODES,
    "feature-cache": ("off", "memory", "disk"),
    "scopes-from": ("strategy", "experiment"),
    "client-state": ("auto", "memory", "disk"),
    "attack": ATTACKS,
    "input-shift": SHIFT_CHOICES,
    "dp-sgd-accountant": ACCOUNTANTS,
    "client-weighting": ("examples", "uniform"),
    "dp": ("none", "central", "local"),
    "dp-clipping": ("fixed", "adaptive"),
    # strategies.task_rules.task_rule_names(), listed here: config imports no strategies
    "task-aggregation": ("auto", "bulyan", "krum", "mean", "median", "multikrum", "trimmed-mean"),
}

# (minimum, maximum, inclusive-minimum) for numeric keys.
RANGES: dict[str, tuple[float, float | None, bool]] = {
    "seed": (0, None, True),
    "num-clients": (1, None, True),
    "tasks-per-client": (1, None, True),
    "dirichlet-alpha": (0.0, None, False),
    "classes-per-client": (1, None, True),
    "test-fraction": (0.0, 0.9, False),
    "max-examples-per-task": (0, None, True),
    "input-shift-strength": (0.0, None, True),
    "input-shift-groups": (0, None, True),
    "finetune-blocks": (1, None, True),
    "lora-rank": (1, None, True),
    "lora-alpha": (0.0, None, False),
    "lora-dropout": (0.0, 0.99, True),
    "local-epochs": (0, None, True),
    "batch-size": (1, None, True),
    "learning-rate": (0.0, None, False),
    "momentum": (0.0, 1.0, True),
    "weight-decay": (0.0, None, True),
    "dwa-temperature": (0.0, None, False),
    "num-rounds": (1, None, True),
    "fraction-train": (0.0, 1.0, False),
    "fraction-evaluate": (0.0, 1.0, True),
    "min-available-clients": (0, None, True),
    "round-timeout-s": (0.0, None, False),
    "node-wait-timeout-s": (0.0, None, True),
    "max-update-ratio": (0.0, None, False),
    "evaluate-every": (1, None, True),
    "evaluate-panel": (0, None, True),
    "global-view-epochs": (0, None, True),
    "holdout-clients": (0, None, True),
    "unseen-finetune-epochs": (0, None, True),
    "checkpoint-every": (0, None, True),
    "attack-fraction": (0.0, 0.99, True),
    "attack-scale": (0.0, None, False),
    "client-num-cpus": (0.0, None, False),
    "client-num-gpus": (0.0, None, True),
    "dp-sgd-noise-multiplier": (0.0, None, False),
    "dp-sgd-max-grad-norm": (0.0, None, False),
    "dp-sgd-delta": (0.0, 1.0, False),
    "dp-clip": (0.0, None, False),
    "dp-noise-multiplier": (0.0, None, True),
    "dp-epsilon": (0.0, None, True),
    "dp-delta": (0.0, 1.0, False),
    "dp-max-epsilon": (0.0, None, True),
    "dp-target-quantile": (0.0, 1.0, True),
    "dp-clip-learning-rate": (0.0, None, False),
    "dp-clipped-count-stddev": (0.0, None, True),
}


def _non_finite(value: Any, path: str = "") -> tuple[str, float] | None:
    """The first NaN or infinite number inside ``value`` (tables and lists walked) and its path."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    if isinstance(value, Mapping):
        items: list[tuple[str, Any]] = [
            (f"{path}.{k}" if path else str(k), v) for k, v in value.items()
        ]
    elif isinstance(value, list | tuple):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    for inner_path, inner in items:
        found = _non_finite(inner, inner_path)
        if found is not None:
            return found
    return None


def _check_finite_table(key: str, table: Mapping[str, Any]) -> None:
    found = _non_finite(table)
    if found is not None:
        path, value = found
        raise ConfigError(key, f"'{path}' is {value}; values must be finite numbers")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against the field's annotation and normalise it."""
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number, got {value}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(key, f"expected a list of strings, got {value!r}")
        return tuple(value)
    if origin is Mapping or annotation is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a table like {{name = value}}, got {value!r}")
        _check_finite_table(key, value)
        return types.MappingProxyType(dict(value))
    raise ConfigError(key, f"unsupported annotation {annotation!r}")  # pragma: no cover


def _check_range(key: str, value: float) -> None:
    if key not in RANGES:
        return
    low, high, inclusive = RANGES[key]
    too_low = value < low if inclusive else value <= low
    if too_low or (high is not None and value > high):
        op = ">=" if inclusive else ">"
        upper = f" and <= {high}" if high is not None else ""
        raise ConfigError(key, f"must be {op} {low}{upper}, got {value}")


def _check_choice(key: str, value: str) -> None:
    if key not in CHOICES:
        return
    allowed = list(CHOICES[key])
    if value not in allowed:
        raise ConfigError(key, f"'{value}' is not one of {allowed}{suggest(value, allowed)}")


def build_config(values: Mapping[str, Any]) -> ExperimentConfig:
    """Validate kebab-case ``values`` over the defaults into a frozen config.

    Checks every key's type (numbers finite), range and choice, then the rules
    between keys and the dataset and backbone registries. The strategy is not
    looked at: :func:`fedmtl.assembly.resolve_run` checks it and applies its
    scope preset.

    Raises
    ------
    ConfigError
        For an unknown key, a wrong type, NaN or infinity, or a value out of
        range, naming the key.
    """
    hints = typing.get_type_hints(ExperimentConfig)
    names = known_keys()
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(key, f"unknown key{suggest(key, names)}; known keys: {names}")
        coerced = _coerce(key, value, hints[field_of(key)])
        if isinstance(coerced, int | float) and not isinstance(coerced, bool):
            _check_range(key, coerced)
        if isinstance(coerced, str):
            _check_choice(key, coerced)
        kwargs[field_of(key)] = coerced
    cfg = ExperimentConfig(**kwargs)
    validate_cross_keys(cfg)
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` override; the value is read as TOML, else a string."""
    if "=" not in text:
        raise ConfigError(text, "an override must look like key=value")
    key, raw = (part.strip() for part in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value
