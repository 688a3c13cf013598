"""What the data and model layers take from a config: the partition spec and the scope rules."""

from __future__ import annotations

import json
from collections.abc import Sequence

from fedmtl.config.schema import ExperimentConfig
from fedmtl.data.assignment import parse_client_tasks
from fedmtl.data.partition_spec import PartitionSpec
from fedmtl.scopes import ScopeRules, finetune_frozen_patterns


def partition_spec(cfg: ExperimentConfig) -> PartitionSpec:
    """The part of ``cfg`` that decides the clients' data (hashable cache key)."""
    return PartitionSpec(
        dataset=cfg.dataset,
        tasks=cfg.tasks,
        num_clients=cfg.num_clients,
        task_assignment=cfg.task_assignment,
        task_counts=tuple(sorted(cfg.task_counts.items())),
        tasks_per_client=cfg.tasks_per_client,
        client_tasks=parse_client_tasks(cfg.client_tasks),
        partitioner=cfg.partitioner,
        dirichlet_alpha=cfg.dirichlet_alpha,
        classes_per_client=cfg.classes_per_client,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        dataset_options=json.dumps(dict(cfg.dataset_options), sort_keys=True, default=str),
        max_examples_per_task=cfg.max_examples_per_task,
        input_shift=cfg.input_shift,
        input_shift_strength=cfg.input_shift_strength,
        input_shift_groups=cfg.input_shift_groups,
        label_noise=tuple(sorted((t, float(v)) for t, v in cfg.label_noise.items())),
    )


def scope_rules(cfg: ExperimentConfig, blocks: Sequence[tuple[str, ...]] = ()) -> ScopeRules:
    """The scope rules of ``cfg``: the fine-tuning mode's frozen patterns, then the run's.

    ``blocks`` are the backbone's blocks (``Backbone.blocks()``), needed by
    ``finetune = "last-k"``. Give a resolved config (:func:`fedmtl.assembly.resolve_run`):
    a strategy's scope preset is already in its ``scope-*`` keys.
    """
    mode_frozen = finetune_frozen_patterns(cfg.finetune, blocks, cfg.finetune_blocks)
    return ScopeRules(
        frozen=mode_frozen + cfg.scope_frozen,
        local=cfg.scope_local,
        task=cfg.scope_task,
        shared=cfg.scope_shared,
        default=cfg.scope_default,
    )
