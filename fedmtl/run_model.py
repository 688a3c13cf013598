"""The run's initial model and its scopes, built once per process from the config.

Server (initial arrays), clients (restore before each message) and
``fedmtl scopes`` all start from this one model, so they agree on keys,
shapes, scopes and initial weights.
"""

from __future__ import annotations

import copy
import itertools
from functools import lru_cache

import torch

from fedmtl.config import ConfigError, ExperimentConfig, partition_spec, scope_rules
from fedmtl.data import ClientData, build_federation
from fedmtl.data.checks import DatasetContractError, check_client_tasks, check_dataset_spec
from fedmtl.data.partitioners import PartitionError
from fedmtl.models import (
    BackboneOptionError,
    BackboneUnavailable,
    MultiTaskModel,
    build_model,
)
from fedmtl.models.checks import BackboneContractError, check_backbone_output
from fedmtl.models.lora import apply_lora
from fedmtl.scopes import assign_scopes
from fedmtl.training import pick_device


def run_device(cfg: ExperimentConfig) -> torch.device:
    """Where this process trains and evaluates for ``cfg``: its ``device`` key.

    ``auto`` takes CUDA when this process sees a CUDA device, else the CPU;
    ``cuda`` without a visible CUDA device raises :class:`ConfigError` naming
    ``device``. Clients and the centralized reference both ask here.
    """
    try:
        return pick_device(cfg.device)
    except RuntimeError:
        raise ConfigError(
            "device",
            "'cuda' but this process sees no CUDA device (torch.cuda.is_available() is "
            'False); use device = "auto" (CUDA when visible) or "cpu"',
        ) from None


@lru_cache(maxsize=4)
def initial_model(cfg: ExperimentConfig) -> MultiTaskModel:
    """The run's initial model (cached; do not modify: use :func:`fresh_model`).

    Raises
    ------
    ValueError
        When the backbone does not take the dataset's kind of input.
    """
    spec = partition_spec(cfg).dataset_spec()
    tasks = {t: spec.tasks[t].num_outputs for t in cfg.tasks}
    model = build_model(cfg.backbone, tasks, cfg.pretrained, cfg.seed, cfg.backbone_options)
    for task in cfg.tasks:  # e.g. a regression head starts at the target mean
        spec.tasks[task].objective.kind.init_head(model.heads[task])
    if model.backbone.input_kind != spec.input_kind:
        raise ValueError(
            f"backbone '{cfg.backbone}' takes {model.backbone.input_kind} inputs but dataset "
            f"'{cfg.dataset}' holds {spec.input_kind} inputs; pick a matching backbone"
        )
    if cfg.finetune == "lora":
        apply_lora(
            model.backbone,
            cfg.lora_rank,
            cfg.lora_alpha,
            cfg.lora_dropout,
            cfg.lora_targets,
            cfg.seed,
        )
    return model


def fresh_model(cfg: ExperimentConfig) -> MultiTaskModel:
    """A copy of the run's initial model (pretrained backbone, seeded heads).

    Frozen-scope tensors are shared with the initial model, not copied: they
    never change, and copying a transformer for every message would cost more
    than the round's training when only heads train. So are backbone submodules
    whose every tensor is frozen (a frozen backbone, its tokenizer included):
    copying their object trees took most of a frozen-MiniLM round (85 ms a
    message, benchmarks/floor.py).
    """
    return copy.deepcopy(initial_model(cfg), memo=dict(_frozen_parts(cfg)))


@lru_cache(maxsize=4)
def _frozen_parts(cfg: ExperimentConfig) -> dict[int, object]:
    """``id -> object`` of the initial model's frozen tensors and all-frozen submodules.

    A deepcopy memo: :func:`fresh_model` shares these instead of copying them.
    """
    model = initial_model(cfg)
    scopes = run_scopes(cfg)
    named = itertools.chain(model.named_parameters(), model.named_buffers())
    parts: dict[int, object] = {id(t): t for name, t in named if scopes.get(name) == "frozen"}
    # Buffers outside the state dict (e.g. BERT's position ids) are never trained or sent.
    unsaved = {id(t) for name, t in model.named_buffers() if name not in scopes}
    frozen = set(parts)
    # Backbone modules only: routines may swap a fresh model's heads (FedBABU tunes a copy
    # of a frozen head), which must not reach the initial model; a backbone's structure
    # is fixed once built.
    for module in model.backbone.modules():
        tensors = {id(t) for t in itertools.chain(module.parameters(), module.buffers())}
        if tensors & frozen and tensors <= frozen | unsaved:
            parts[id(module)] = module
    return parts


@lru_cache(maxsize=4)
def run_scopes(cfg: ExperimentConfig) -> dict[str, str]:
    """Scope of every state_dict key of the run's model (fine-tuning mode included)."""
    model = initial_model(cfg)
    rules = scope_rules(cfg, model.backbone.blocks())
    return assign_scopes(model.state_dict().keys(), rules)


def check_task_scope(cfg: ExperimentConfig) -> None:
    """With clients holding several tasks, the task scope may hold task heads only.

    A client has one backbone; a backbone entry in the task scope would give
    it one copy per task it holds.

    Raises
    ------
    ConfigError
        Naming ``scope-task`` and the entries that are not a task's head.
    """
    try:
        several = any(len(tasks) > 1 for tasks in partition_spec(cfg).assignment())
    except ValueError:
        return  # an assignment error is the data check's to report, naming its key
    if not several:
        return
    heads = tuple(f"heads.{task}." for task in cfg.tasks)
    shared_by_tasks = [
        k for k, s in run_scopes(cfg).items() if s == "task" and not k.startswith(heads)
    ]
    if shared_by_tasks:
        raise ConfigError(
            "scope-task",
            f"clients hold several tasks but one backbone, so the task scope may hold task "
            f"heads only (heads.*); it also matches {shared_by_tasks[:3]}"
            f"{' ...' if len(shared_by_tasks) > 3 else ''}: put those in scope-shared or "
            "scope-local",
        )


def check_private_scopes(cfg: ExperimentConfig) -> None:
    """With ``dp``, no buffer (batch-norm running statistics, counters) may leave clients.

    Buffers are computed from the data, so under DP they would have to be
    clipped and noised like weights, and noise turns a running variance
    negative (NaN outputs from the first noised round). They stay local
    (FedBN) or frozen instead.

    Raises
    ------
    ConfigError
        Naming ``scope-local`` and the buffers in the shared or task scope.
    """
    if cfg.dp == "none":
        return
    scopes = run_scopes(cfg)
    leaving = [
        name
        for name, _ in initial_model(cfg).named_buffers()
        if scopes.get(name) in ("shared", "task")
    ]
    if leaving:
        raise ConfigError(
            "scope-local",
            f"with dp = '{cfg.dp}' no buffer may leave clients: {leaving[:3]}"
            f"{' ...' if len(leaving) > 3 else ''} are in the shared or task scope, and noise "
            "would make a running variance negative; keep them local (FedBN), e.g. "
            'scope-local = ["heads.*", "*.running_mean", "*.running_var", '
            '"*.num_batches_tracked"], or freeze them',
        )


def check_run_inputs(cfg: ExperimentConfig) -> None:
    """Load every client's data and the initial model once, before any runtime starts.

    A missing data file, weights file or optional package, data that cannot be
    split as asked, or a plug-in that returns what fedmtl cannot use then stops
    the run with the key to fix, instead of failing inside a Ray worker.

    Raises
    ------
    ConfigError
        Naming the key: ``dataset``, ``dataset-options``, a partitioner's key
        (``classes-per-client``, ``dirichlet-alpha``, ``num-clients``, ...),
        ``backbone``, ``backbone-options`` or ``pretrained``.
    """
    clients = _check_data(cfg)
    check_task_scope(cfg)
    check_private_scopes(cfg)
    try:
        model = initial_model(cfg)
    except BackboneOptionError as exc:
        raise ConfigError("backbone-options", str(exc)) from None
    except FileNotFoundError as exc:
        key = "backbone" if cfg.pretrained in ("builtin", "none") else "pretrained"
        raise ConfigError(key, str(exc)) from None
    except (BackboneUnavailable, ValueError) as exc:
        raise ConfigError("backbone", str(exc)) from None
    sample = next((c.x_train[:2] for c in clients if len(c.x_train)), None)
    if sample is not None:
        try:
            check_backbone_output(cfg.backbone, model.backbone, sample)
        except BackboneContractError as exc:
            raise ConfigError("backbone", str(exc)) from None


def _check_data(cfg: ExperimentConfig) -> tuple[ClientData, ...]:
    """Every client's data, split and checked against the dataset's contract (all parts)."""
    spec = partition_spec(cfg)
    # With options the data is the user's own (files, directories): that is the key to fix.
    data_key = "dataset-options" if cfg.dataset_options else "dataset"
    try:
        dataset = spec.dataset_spec()
        check_dataset_spec(dataset)
        federation = build_federation(spec)
        for parts in federation:
            check_client_tasks(parts, dataset)
    except PartitionError as exc:
        raise ConfigError(exc.key, str(exc)) from None
    except DatasetContractError as exc:
        raise ConfigError(data_key, str(exc)) from None
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError("dataset-options", str(exc)) from None
    return tuple(part for parts in federation for part in parts)
