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
from fedmtl.trackers import TRACKERS, TrackerUnavailableError


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
    _check_trackers(cfg)
    _check_dp_sgd(cfg)
    _check_dp(cfg)
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


def _check_dp_sgd(cfg: ExperimentConfig) -> None:
    """DP-SGD (``dp-sgd = true``) only where every step is per-example clipped and accounted."""
    if not cfg.dp_sgd:
        return
    if cfg.dp_sgd_delta >= 1.0:
        raise ConfigError("dp-sgd-delta", f"must be > 0 and < 1, got {cfg.dp_sgd_delta}")
    refused = {
        "tasks-per-client": (
            cfg.tasks_per_client > 1,
            "must be 1: the joint trainer of several tasks per client has no per-example gradients",
        ),
        "task-weighting": (
            cfg.task_weighting != "equal",
            "must be 'equal': a learned weighting trains on private losses outside DP-SGD",
        ),
        "global-view-epochs": (
            cfg.global_view_epochs > 0,
            "must be 0: tuning a head at evaluation trains on private data outside the accountant",
        ),
        "unseen-finetune-epochs": (
            cfg.holdout_clients > 0 and cfg.unseen_finetune_epochs > 0,
            "must be 0 with holdout-clients > 0: unseen clients tune a head on private data "
            "outside the accountant",
        ),
    }
    for key, (wrong, why) in refused.items():
        if wrong:
            raise ConfigError(key, f"with dp-sgd = true {why}")


def _check_trackers(cfg: ExperimentConfig) -> None:
    """``trackers``: registered names (:data:`fedmtl.trackers.TRACKERS`), once each, installed."""
    allowed = TRACKERS.names()
    for name in cfg.trackers:
        if name not in TRACKERS:
            raise ConfigError(
                "trackers", f"'{name}' is not one of {allowed}{suggest(name, allowed)}"
            )
        try:
            TRACKERS.get(name).require(name)
        except TrackerUnavailableError as exc:
            raise ConfigError("trackers", str(exc)) from None
    if len(set(cfg.trackers)) != len(cfg.trackers):
        raise ConfigError("trackers", f"lists a tracker twice: {list(cfg.trackers)}")


def _check_dp(cfg: ExperimentConfig) -> None:
    """Client-level DP (``dp``): the settings its guarantee and accounting rest on.

    What needs the built strategy (its aggregation rule) is checked by
    :func:`fedmtl.privacy.check_strategy`.
    """
    if cfg.dp == "none":
        return
    taking_part = cfg.num_clients - cfg.holdout_clients
    refused = {
        "client-weighting": (
            cfg.dp == "central" and cfg.client_weighting != "uniform",
            "must be 'uniform': a client weighted by its examples moves the mean by more "
            "than clip / clients, and the accounting assumes equal weights",
        ),
        "dp-delta": (
            cfg.dp_delta >= 1.0 / taking_part,
            f"must be < 1 / clients taking part (1/{taking_part}), got {cfg.dp_delta}: "
            "a larger delta allows publishing one client's update as it is",
        ),
        "dp-noise-multiplier": (
            cfg.dp_epsilon > 0 and cfg.dp_noise_multiplier > 0,
            "give dp-noise-multiplier or a target dp-epsilon (the noise is solved for), not both",
        ),
        "dp-clipping": (
            cfg.dp == "local" and cfg.dp_clipping == "adaptive",
            "'adaptive' needs the server's noised clipped count: use dp = 'central' or "
            "dp-clipping = 'fixed'",
        ),
        "dp-max-epsilon": (
            cfg.dp_max_epsilon > 0 and cfg.dp_noise_multiplier == 0 and cfg.dp_epsilon == 0,
            "a budget needs noise: set dp-noise-multiplier > 0 or dp-epsilon > 0",
        ),
        "min-available-clients": (
            0 < cfg.min_available_clients < taking_part,
            "must be 0 (every client taking part) with dp: the accountant needs a fixed "
            "sample of m of N clients, not one that depends on who is connected",
        ),
        "task-aggregation": (
            cfg.dp == "central" and cfg.task_aggregation not in ("auto", "mean"),
            "must be 'auto' or 'mean' with dp = 'central': robust rules discard or reweight "
            "clipped updates, so noise of clip / clients no longer covers them",
        ),
    }
    for key, (wrong, why) in refused.items():
        if wrong:
            raise ConfigError(key, f"with dp = '{cfg.dp}' {why}")
