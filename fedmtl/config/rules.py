"""Rules between keys, and between keys and the dataset and backbone registries."""

from __future__ import annotations

from fedmtl.config.schema import ConfigError, ExperimentConfig, suggest
from fedmtl.data import get_dataset_spec
from fedmtl.data.assignment import AssignmentError, assign_tasks, parse_client_tasks
from fedmtl.data.label_noise import LabelNoiseError, check_label_noise
from fedmtl.data.registry import DatasetOptionError
from fedmtl.data.shifts import INPUT_SHIFTS, shifts_for
from fedmtl.models import BackboneOptionError, check_backbone
from fedmtl.poisoning import ATTACKS
from fedmtl.registry import RegistryError
from fedmtl.scopes import ScopeRuleError, ScopeRules


def validate_cross_keys(cfg: ExperimentConfig) -> None:
    """Checks that involve several keys or the plug-in registries (the strategy excepted).

    Raises
    ------
    ConfigError
        Naming the key to change.
    """
    _check_dataset_and_tasks(cfg)
    _check_task_assignment(cfg)
    _check_scope_patterns(cfg)
    _check_client_counts(cfg)
    _check_input_shift(cfg)
    _check_label_noise(cfg)
    _check_task_weights(cfg)
    if cfg.checkpoint_every > 0 and cfg.client_state == "memory":
        raise ConfigError(
            "client-state",
            "'memory' state dies with the run, so checkpoint-every > 0 could not resume it; "
            "use 'disk' (or 'auto', which picks 'disk' when checkpointing)",
        )


def _check_dataset_and_tasks(cfg: ExperimentConfig) -> None:
    try:
        spec = get_dataset_spec(cfg.dataset, cfg.dataset_options)
    except RegistryError as exc:
        raise ConfigError("dataset", str(exc)) from None
    except (DatasetOptionError, FileNotFoundError, ValueError) as exc:
        # A dataset that cannot read its files says why; the options chose the files.
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
                f"{sorted(spec.tasks)}{suggest(task, sorted(spec.tasks))}",
            )
    if len(set(cfg.tasks)) != len(cfg.tasks):
        raise ConfigError("tasks", f"lists a task twice: {list(cfg.tasks)}")
    kinds = ATTACKS.get(cfg.attack).task_kinds
    unfit = [t for t in cfg.tasks if kinds is not None and spec.tasks[t].kind not in kinds]
    if unfit:
        raise ConfigError(
            "attack",
            f"'{cfg.attack}' applies to {sorted(kinds or ())} tasks only, not to {unfit}; "
            "use an attack on the update (sign-flip, scale, noise) or drop those tasks",
        )


def _check_task_assignment(cfg: ExperimentConfig) -> None:
    """``task-assignment`` and its keys give every client its tasks, and every task a client.

    ``client-tasks`` is read by ``"lists"`` only, so elsewhere it must stay empty;
    ``task-counts`` holds integers >= 0 naming run tasks.
    """
    if cfg.task_assignment == "counts":
        unknown = set(cfg.task_counts) - set(cfg.tasks)
        if unknown:
            raise ConfigError("task-counts", f"names tasks not in 'tasks': {sorted(unknown)}")
        counts = list(cfg.task_counts.values())
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
            raise ConfigError("task-counts", f"counts must be integers >= 0, got {counts}")
    if cfg.client_tasks and cfg.task_assignment != "lists":
        raise ConfigError(
            "client-tasks",
            f'is read by task-assignment = "lists" only (task-assignment is '
            f'"{cfg.task_assignment}"); set task-assignment = "lists" or drop client-tasks',
        )
    try:
        assign_tasks(
            cfg.tasks,
            cfg.num_clients,
            cfg.task_assignment,
            cfg.task_counts,
            tasks_per_client=cfg.tasks_per_client,
            lists=parse_client_tasks(cfg.client_tasks),
            seed=cfg.seed,
        )
    except AssignmentError as exc:
        raise ConfigError(exc.key, str(exc)) from None


def _check_label_noise(cfg: ExperimentConfig) -> None:
    """``label-noise``: run tasks, levels finite, >= 0, <= 1 for a classification."""
    if not cfg.label_noise:
        return
    specs = get_dataset_spec(cfg.dataset, cfg.dataset_options).tasks
    try:
        check_label_noise(cfg.label_noise, cfg.tasks, specs)
    except LabelNoiseError as exc:
        raise ConfigError("label-noise", str(exc)) from None


def _check_task_weights(cfg: ExperimentConfig) -> None:
    """``task-weights``: finite numbers >= 0 for run tasks; all of them for ``fixed``."""
    unknown = sorted(set(cfg.task_weights) - set(cfg.tasks))
    if unknown:
        raise ConfigError("task-weights", f"names tasks not in 'tasks': {unknown}")
    for task, weight in cfg.task_weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ConfigError("task-weights", f"'{task}' = {weight!r}: weights are numbers >= 0")
    if cfg.task_weighting == "fixed":
        missing = [t for t in cfg.tasks if t not in cfg.task_weights]
        if missing:
            raise ConfigError(
                "task-weights",
                f"task-weighting = 'fixed' needs a weight for every task; missing {missing}",
            )
    elif cfg.task_weights:
        raise ConfigError(
            "task-weights",
            f"is read by task-weighting = 'fixed' only (this run: '{cfg.task_weighting}')",
        )


def _check_scope_patterns(cfg: ExperimentConfig) -> None:
    """The ``scope-*`` keys make valid rules (``re:`` patterns compile)."""
    try:
        ScopeRules(
            frozen=cfg.scope_frozen,
            local=cfg.scope_local,
            task=cfg.scope_task,
            shared=cfg.scope_shared,
            default=cfg.scope_default,
        )
    except ScopeRuleError as exc:
        raise ConfigError(f"scope-{exc.field}", str(exc)) from None


def _check_client_counts(cfg: ExperimentConfig) -> None:
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
    taking_part = cfg.num_clients - cfg.holdout_clients
    if cfg.evaluate_panel > taking_part:
        raise ConfigError(
            "evaluate-panel",
            f"{cfg.evaluate_panel} clients but only {taking_part} "
            "take part (num-clients - holdout-clients)",
        )
    if cfg.evaluate_panel and cfg.fraction_evaluate < 1.0:
        raise ConfigError(
            "evaluate-panel",
            "a fixed panel replaces sampling at evaluation: set fraction-evaluate = 1.0",
        )


def _check_input_shift(cfg: ExperimentConfig) -> None:
    """``input-shift`` fits the dataset's inputs; its strength and groups are in range."""
    if cfg.input_shift_groups > cfg.num_clients:
        raise ConfigError(
            "input-shift-groups",
            f"must be <= num-clients ({cfg.num_clients}), got {cfg.input_shift_groups} "
            "(0: one group per client)",
        )
    if cfg.input_shift == "none":
        return
    shift = INPUT_SHIFTS.get(cfg.input_shift)
    kind = get_dataset_spec(cfg.dataset, cfg.dataset_options).input_kind
    if kind not in shift.input_kinds:
        raise ConfigError(
            "input-shift",
            f"'{cfg.input_shift}' shifts {list(shift.input_kinds)} inputs, but dataset "
            f"'{cfg.dataset}' has {kind} inputs: use one of {['none', *shifts_for(kind)]}",
        )
    high = shift.max_strength
    strength = cfg.input_shift_strength
    if strength <= 0 or (high is not None and strength > high):
        bound = f" and <= {high}" if high is not None else ""
        raise ConfigError(
            "input-shift-strength",
            f"'{cfg.input_shift}' needs a strength > 0{bound} ({shift.strength}), got {strength}",
        )
