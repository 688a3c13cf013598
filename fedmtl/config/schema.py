"""The experiment's keys: the frozen :class:`ExperimentConfig` and :class:`ConfigError`."""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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


def suggest(name: str, options: list[str]) -> str:
    """A " (did you mean 'x'?)" hint for a close match among ``options``, else ``""``."""
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _empty_table() -> Mapping[str, Any]:
    return types.MappingProxyType({})


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
    dataset_options: Mapping[str, Any] = field(default_factory=_empty_table)
    tasks: tuple[str, ...] = ("digit", "parity", "ge5")
    num_clients: int = 12
    task_assignment: str = "round-robin"
    task_counts: Mapping[str, int] = field(default_factory=_empty_table)
    tasks_per_client: int = 1
    client_tasks: tuple[str, ...] = ()
    partitioner: str = "dirichlet"
    dirichlet_alpha: float = 1.0
    classes_per_client: int = 4
    test_fraction: float = 0.25
    max_examples_per_task: int = 0
    input_shift: str = "none"
    input_shift_strength: float = 0.0
    input_shift_groups: int = 0
    label_noise: Mapping[str, float] = field(default_factory=_empty_table)
    # model
    backbone: str = "digits-cnn"
    backbone_options: Mapping[str, Any] = field(default_factory=_empty_table)
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
    task_weighting: str = "equal"
    task_weights: Mapping[str, float] = field(default_factory=_empty_table)
    dwa_temperature: float = 2.0
    device: str = "auto"
    # example-level DP-SGD of local training (fedmtl.private_training; needs the dpsgd extra)
    dp_sgd: bool = False
    dp_sgd_noise_multiplier: float = 1.0
    dp_sgd_max_grad_norm: float = 1.0
    dp_sgd_delta: float = 1e-5
    dp_sgd_accountant: str = "rdp"
    # federation
    strategy: str = "fedavg"
    strategy_options: Mapping[str, Any] = field(default_factory=_empty_table)
    num_rounds: int = 10
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_available_clients: int = 0
    round_timeout_s: float = 600.0
    node_wait_timeout_s: float = 300.0
    max_update_ratio: float = 1000.0
    task_aggregation: str = "auto"
    client_weighting: str = "examples"
    # client-level differential privacy (fedmtl.privacy, strategies.privacy; the dp extra)
    dp: str = "none"
    dp_clipping: str = "fixed"
    dp_clip: float = 1.0
    dp_noise_multiplier: float = 0.0
    dp_epsilon: float = 0.0
    dp_delta: float = 1e-5
    dp_max_epsilon: float = 0.0
    dp_target_quantile: float = 0.5
    dp_clip_learning_rate: float = 0.2
    dp_clipped_count_stddev: float = 0.0
    dp_seeded_noise: bool = False
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
    trackers: tuple[str, ...] = ()  # fedmtl.trackers names: mirror rounds to TensorBoard, MLflow
    # Ray: resources per simulated client, and the cluster to attach to ("" = a local Ray)
    client_num_cpus: float = 1.0
    client_num_gpus: float = 0.0
    ray_address: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the config as kebab-case keys with plain JSON/TOML values."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[key_of(f.name)] = value
        return out

    def __hash__(self) -> int:
        # Mapping fields are not hashable; the canonical JSON form is. It is built once
        # per object (every lru_cache lookup keyed by a config hashes it: ~1 ms a time),
        # kept as text, not as a number, since string hashes differ between processes.
        canonical = self.__dict__.get("_canonical")
        if canonical is None:
            canonical = json.dumps(self.to_dict(), sort_keys=True, default=str)
            object.__setattr__(self, "_canonical", canonical)
        return hash(canonical)

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


def key_of(field_name: str) -> str:
    """The experiment key (kebab-case) of a dataclass field."""
    return field_name.replace("_", "-")


def field_of(key: str) -> str:
    """The dataclass field (snake_case) of an experiment key."""
    return key.replace("-", "_")


def known_keys() -> list[str]:
    """Return every valid experiment key (kebab-case)."""
    return [key_of(f.name) for f in dataclasses.fields(ExperimentConfig)]
