"""The run's initial model, built once per process from the experiment config.

Server (initial arrays), clients (restore before each message) and
``fedmtl scopes`` all start from this one model, so they agree on keys,
shapes and initial weights.
"""

from __future__ import annotations

import copy
from functools import lru_cache

from fedmtl.config import ExperimentConfig
from fedmtl.data import get_dataset_spec
from fedmtl.models import MultiTaskModel, build_model


@lru_cache(maxsize=4)
def initial_model(cfg: ExperimentConfig) -> MultiTaskModel:
    """The run's initial model (cached; do not modify: use :func:`fresh_model`)."""
    spec = get_dataset_spec(cfg.dataset)
    tasks = {t: spec.tasks[t].num_outputs for t in cfg.tasks}
    return build_model(cfg.backbone, tasks, cfg.pretrained, cfg.seed)


def fresh_model(cfg: ExperimentConfig) -> MultiTaskModel:
    """A copy of the run's initial model (pretrained backbone, seeded heads)."""
    return copy.deepcopy(initial_model(cfg))
