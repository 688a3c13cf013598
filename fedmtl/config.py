"""Experiment configuration: defaults, TOML overlays, overrides, validation.

An experiment is the built-in defaults (the fields of :class:`ExperimentConfig`)
overlaid by a flat TOML file (``simulations/*.toml``) and then by overrides
(``--set key=value`` on the command line, or Flower's ``run_config``). Keys are
kebab-case (``num-rounds``); the dataclass fields are their snake_case twins.
This module is the only reader of ``run_config``: everything downstream takes
the frozen :class:`ExperimentConfig`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import shlex
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmtl.data import get_dataset_spec
from fedmtl.data.federation import PartitionSpec
from fedmtl.data.registry import DatasetOptionError
from fedmtl.models import BackboneOptionError, check_backbone
from fedmtl.registry import RegistryError
from fedmtl.scopes import FINETUNE_MODES, ScopeRules, finetune_frozen_patterns

SIMULATIONS_DIR = Path(__file__).resolve().parent.parent / "simulations"
SCOPES = ("frozen", "shared", "task", "local")


class ConfigError(ValueError):
    """A configuration key has a value that is not allowed.

    Parameters
    ----------
    key : str
        The offending key, as written in experiment files (kebab-case).
    message : str
        What is wrong and what is allowed.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"config key '{key}': {message}")


@dataclass(frozen=True)
class ExperimentConfig:
    """A fully resolved, validated experiment.

    Every field is documented in ``simulations/README.md``; experiment files
    only list what they change.
    """

    # identity and reproducibility
    name: str = "digits"
    seed: int = 0
    output_dir: str = "runs"
    # data and tasks
    dataset: str = "digits"
    dataset_options: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    tasks: tuple[str, ...] = ("digit", "parity", "ge5")
    num_clients: int = 12
    task_assignment: str = "round-robin"
    task_counts: Mapping[str, int] = field(default_factory=lambda: types.MappingProxyType({}))
    partitioner: str = "dirichlet"
    dirichlet_alpha: float = 1.0
    classes_per_client: int = 4
    test_fraction: float = 0.25
    max_examples_per_task: int = 0
    # model
    backbone: str = "digits-cnn"
    backbone_options: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    pretrained: str = "builtin"
    finetune: str = "full"
    finetune_blocks: int = 1
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ()
    feature_cache: str = "memory"
    feature_cache_dir: str = ""
    scope_frozen: tuple[str, ...] = ()
    scope_local: tuple[str, ...] = ("heads.*", "*.num_batches_tracked")
    scope_task: tuple[str, ...] = ()
    scope_shared: tuple[str, ...] = ("*",)
    scope_default: str = "shared"
    scopes_from: str = "strategy"
    # local training
    local_epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    device: str = "auto"
    # federation
    strategy: str = "fedavg"
    strategy_options: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    num_rounds: int = 10
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_available_clients: int = 0
    round_timeout_s: float = 600.0
    node_wait_timeout_s: float = 300.0
    max_update_ratio: float = 1000.0
    # evaluation, checkpoints and client state
    evaluate_every: int = 1
    evaluate_panel: int = 0
    global_view_epochs: int = 0
    holdout_clients: int = 0
    unseen_finetune_epochs: int = 5
    attack: str = "none"
    attack_fraction: float = 0.0
    attack_scale: float = 4.0
    checkpoint_every: int = 0
    client_state: str = "auto"
    client_state_dir: str = ""
    # Ray resources per simulated client
    client_num_cpus: float = 1.0
    client_num_gpus: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the config as kebab-case keys with plain JSON/TOML values."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[_key(f.name)] = value
        return out

    def __hash__(self) -> int:
        # Mapping fields are not hashable; the canonical JSON form is.
        return hash(json.dumps(self.to_dict(), sort_keys=True, default=str))

    @property
    def client_state_mode(self) -> str:
        """``memory`` or ``disk``: ``auto`` keeps state on disk when the run checkpoints."""
        if self.client_state == "auto":
            return "disk" if self.checkpoint_every > 0 else "memory"
        return self.client_state

    @property
    def expected_clients(self) -> int:
        """Nodes the server waits for before sampling (defaults to every client that trains).

        Held-out clients are connected but never sampled, so they do not count.
        """
        taking_part = self.num_clients - self.holdout_clients
        return min(self.min_available_clients or taking_part, taking_part)


def _key(field_name: str) -> str:
    return field_name.replace("_", "-")


def _field_name(key: str) -> str:
    return key.replace("-", "_")


# Allowed values of string-valued keys; a callable gives them lazily, so
# registries filled by plug-ins are consulted at validation time.
def _strategy_names() -> list[str]:
    # Imported lazily: the strategy registry is a separate package.
    from strategies.registry import available_strategies

    return available_strategies()


CHOICES: dict[str, tuple[str, ...] | Callable[[], list[str]]] = {
    "task-assignment": ("round-robin", "counts"),
    "partitioner": ("iid", "dirichlet", "pathological"),
    "optimizer": ("sgd", "adam"),
    "device": ("auto", "cpu", "cuda"),
    "scope-default": SCOPES,
    "finetune": FINETUNE_MODES,
    "feature-cache": ("off", "memory", "disk"),
    "scopes-from": ("strategy", "experiment"),
    "client-state": ("auto", "memory", "disk"),
    "attack": ("none", "label-flip", "sign-flip", "scale", "noise"),
}

# (minimum, maximum, inclusive-minimum) for numeric keys.
RANGES: dict[str, tuple[float, float | None, bool]] = {
    "seed": (0, None, True),
    "num-clients": (1, None, True),
    "dirichlet-alpha": (0.0, None, False),
    "classes-per-client": (1, None, True),
    "test-fraction": (0.0, 0.9, False),
    "max-examples-per-task": (0, None, True),
    "finetune-blocks": (1, None, True),
    "lora-rank": (1, None, True),
    "lora-alpha": (0.0, None, False),
    "lora-dropout": (0.0, 0.99, True),
    "local-epochs": (0, None, True),
    "batch-size": (1, None, True),
    "learning-rate": (0.0, None, False),
    "momentum": (0.0, 1.0, True),
    "weight-decay": (0.0, None, True),
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
}


def known_keys() -> list[str]:
    """Return every valid experiment key (kebab-case)."""
    return [_key(f.name) for f in dataclasses.fields(ExperimentConfig)]


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


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
    allowed_spec = CHOICES[key]
    allowed = list(allowed_spec()) if callable(allowed_spec) else list(allowed_spec)
    if value not in allowed:
        raise ConfigError(key, f"'{value}' is not one of {allowed}{_suggest(value, allowed)}")


def _validate_cross_keys(cfg: ExperimentConfig) -> None:
    """Checks that involve several keys or the plug-in registries."""
    try:
        spec = get_dataset_spec(cfg.dataset, cfg.dataset_options)
    except RegistryError as exc:
        raise ConfigError("dataset", str(exc)) from None
    except (DatasetOptionError, FileNotFoundError) as exc:
        raise ConfigError("dataset-options", str(exc)) from None
    try:
        check_backbone(cfg.backbone, cfg.backbone_options)
    except RegistryError as exc:
        raise ConfigError("backbone", str(exc)) from None
    except BackboneOptionError as exc:
        raise ConfigError("backbone-options", str(exc)) from None
    if not cfg.tasks:
        raise ConfigError("tasks", "needs at least one task")
    for task in cfg.tasks:
        if task not in spec.tasks:
            raise ConfigError(
                "tasks",
                f"'{task}' is not a task of dataset '{cfg.dataset}'; allowed: "
                f"{sorted(spec.tasks)}{_suggest(task, sorted(spec.tasks))}",
            )
    if len(set(cfg.tasks)) != len(cfg.tasks):
        raise ConfigError("tasks", f"lists a task twice: {list(cfg.tasks)}")
    if cfg.task_assignment == "counts":
        unknown = set(cfg.task_counts) - set(cfg.tasks)
        if unknown:
            raise ConfigError("task-counts", f"names tasks not in 'tasks': {sorted(unknown)}")
        counts = list(cfg.task_counts.values())
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
            raise ConfigError("task-counts", f"counts must be integers >= 0, got {counts}")
        total = sum(counts)
        if total != cfg.num_clients:
            raise ConfigError(
                "task-counts",
                f"counts add up to {total} but num-clients is {cfg.num_clients}",
            )
    elif cfg.num_clients < len(cfg.tasks):
        raise ConfigError(
            "num-clients", f"must be >= the number of tasks ({len(cfg.tasks)}) for round-robin"
        )
    for scope in SCOPES:
        for pattern in getattr(cfg, f"scope_{scope}", ()):
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as exc:
                    raise ConfigError(f"scope-{scope}", f"bad regex '{pattern}': {exc}") from None
    if cfg.min_available_clients > cfg.num_clients:
        raise ConfigError(
            "min-available-clients",
            f"must be <= num-clients ({cfg.num_clients}), got {cfg.min_available_clients}",
        )
    if cfg.holdout_clients >= cfg.num_clients:
        raise ConfigError(
            "holdout-clients",
            f"must leave clients to train: {cfg.holdout_clients} >= num-clients {cfg.num_clients}",
        )
    if cfg.evaluate_panel > cfg.num_clients - cfg.holdout_clients:
        raise ConfigError(
            "evaluate-panel",
            f"{cfg.evaluate_panel} clients but only {cfg.num_clients - cfg.holdout_clients} "
            "take part (num-clients - holdout-clients)",
        )
    if cfg.evaluate_panel and cfg.fraction_evaluate < 1.0:
        raise ConfigError(
            "evaluate-panel",
            "a fixed panel replaces sampling at evaluation: set fraction-evaluate = 1.0",
        )
    if cfg.checkpoint_every > 0 and cfg.client_state == "memory":
        raise ConfigError(
            "client-state",
            "'memory' state dies with the run, so checkpoint-every > 0 could not resume it; "
            "use 'disk' (or 'auto', which picks 'disk' when checkpointing)",
        )
    _check_strategy(cfg)


def _check_strategy(cfg: ExperimentConfig) -> None:
    """The strategy must exist and accept its options (built once, then dropped)."""
    from strategies.registry import StrategyOptionError, build_strategy

    if cfg.strategy not in _strategy_names() and ":" not in cfg.strategy:
        names = _strategy_names()
        raise ConfigError(
            "strategy",
            f"'{cfg.strategy}' is not a registered strategy; allowed: {names} "
            f"or 'package.module:ClassName'{_suggest(cfg.strategy, names)}",
        )
    try:
        build_strategy(cfg.strategy, cfg.strategy_options)
    except StrategyOptionError as exc:
        key = "strategy-options" if "option" in str(exc) else "strategy"
        raise ConfigError(key, str(exc)) from None


def build_config(values: Mapping[str, Any]) -> ExperimentConfig:
    """Validate kebab-case ``values`` over the defaults into a frozen config.

    Raises
    ------
    ConfigError
        For an unknown key, a wrong type or a value out of range, naming the key.
    """
    hints = typing.get_type_hints(ExperimentConfig)
    names = known_keys()
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(key, f"unknown key{_suggest(key, names)}; known keys: {names}")
        annotation = hints[_field_name(key)]
        coerced = _coerce(key, value, annotation)
        if isinstance(coerced, int | float) and not isinstance(coerced, bool):
            _check_range(key, coerced)
        if isinstance(coerced, str):
            _check_choice(key, coerced)
        kwargs[_field_name(key)] = coerced
    cfg = ExperimentConfig(**kwargs)
    _validate_cross_keys(cfg)
    return _apply_strategy_scopes(cfg)


def _apply_strategy_scopes(cfg: ExperimentConfig) -> ExperimentConfig:
    """A personalization strategy's scope preset replaces the scope keys (``scopes-from``).

    FedPer, LG-FedAvg, FedBN, ... *are* scope choices: the preset travels with the
    strategy, and the resolved config (``config.toml``) shows the scopes the run used.
    """
    from strategies.registry import strategy_scope_preset

    preset = strategy_scope_preset(cfg.strategy)
    if cfg.scopes_from != "strategy" or preset is None:
        return cfg

    def patterns(scope: str) -> tuple[str, ...]:
        return tuple(str(p) for p in preset.get(scope, ()))

    return dataclasses.replace(
        cfg,
        scope_frozen=cfg.scope_frozen + patterns("frozen"),
        scope_local=patterns("local"),
        scope_task=patterns("task"),
        scope_shared=patterns("shared"),
        scope_default=str(preset.get("default", "shared")),
    )


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


def resolve_experiment_path(name_or_path: str) -> Path:
    """Find an experiment file by path, or by name in ``simulations/``."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    for folder in (Path.cwd() / "simulations", SIMULATIONS_DIR):
        named = folder / f"{name_or_path.removesuffix('.toml')}.toml"
        if named.is_file():
            return named
    available = sorted(p.stem for p in SIMULATIONS_DIR.glob("*.toml"))
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


def load_experiment(
    experiment: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ExperimentConfig:
    """Defaults, then the experiment file, then ``overrides``; validated."""
    values: dict[str, Any] = {}
    if experiment is not None:
        values.update(read_experiment_file(resolve_experiment_path(str(experiment))))
    values.update(overrides or {})
    return build_config(values)


def config_from_run_config(run_config: Mapping[str, Any]) -> ExperimentConfig:
    """Build the config from Flower's ``run_config`` (``flwr run .``).

    The key ``experiment`` names the file; ``overrides`` holds space-separated
    ``key=value`` pairs (the syntax of ``--set``); any other key is an override too.
    """
    values = dict(run_config)
    experiment = values.pop("experiment", None)
    overrides = dict(parse_override(t) for t in shlex.split(str(values.pop("overrides", ""))))
    # Flower flattens nothing else for us: any other key is an override too.
    overrides = {**values, **overrides}
    return load_experiment(str(experiment) if experiment else None, overrides)


def partition_spec(cfg: ExperimentConfig) -> PartitionSpec:
    """The part of ``cfg`` that decides the clients' data (hashable cache key)."""
    return PartitionSpec(
        dataset=cfg.dataset,
        tasks=cfg.tasks,
        num_clients=cfg.num_clients,
        task_assignment=cfg.task_assignment,
        task_counts=tuple(sorted(cfg.task_counts.items())),
        partitioner=cfg.partitioner,
        dirichlet_alpha=cfg.dirichlet_alpha,
        classes_per_client=cfg.classes_per_client,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        dataset_options=json.dumps(dict(cfg.dataset_options), sort_keys=True, default=str),
        max_examples_per_task=cfg.max_examples_per_task,
    )


def scope_rules(cfg: ExperimentConfig, blocks: Sequence[tuple[str, ...]] = ()) -> ScopeRules:
    """The scope rules of ``cfg``: the fine-tuning mode's frozen patterns, then the run's.

    ``blocks`` are the backbone's blocks (``Backbone.blocks()``), needed by
    ``finetune = "last-k"``.
    """
    mode_frozen = finetune_frozen_patterns(cfg.finetune, blocks, cfg.finetune_blocks)
    return ScopeRules(
        frozen=mode_frozen + cfg.scope_frozen,
        local=cfg.scope_local,
        task=cfg.scope_task,
        shared=cfg.scope_shared,
        default=cfg.scope_default,
    )
