"""The multi-task model: one shared backbone, one head per task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fedmtl.models.backbones import Backbone, build_backbone


class MultiTaskModel(nn.Module):
    """``backbone`` features feed the head of the requested task.

    Parameters
    ----------
    backbone : Backbone
        Headless feature extractor with ``feature_dim``.
    heads : mapping of str to nn.Module
        One head per task; state_dict keys are ``heads.<task>.*``.
    """

    def __init__(self, backbone: Backbone, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(dict(heads))

    def forward(self, x: Any, task: str) -> torch.Tensor:
        """Return the logits of ``task`` for prepared inputs ``x`` (see ``Backbone.prepare``)."""
        return self.head_logits(self.backbone(x), task)

    def head_logits(self, features: torch.Tensor, task: str) -> torch.Tensor:
        """Return the logits of ``task``'s head for backbone ``features``."""
        return self.heads[task](features)  # type: ignore[no-any-return]


def build_model(
    backbone: str,
    tasks: Mapping[str, int],
    pretrained: str = "none",
    seed: int = 0,
    backbone_options: Mapping[str, Any] | None = None,
) -> MultiTaskModel:
    """Build the model deterministically: same arguments, same initial weights.

    Parameters
    ----------
    backbone : str
        Backbone name or ``scheme:target`` (see :func:`build_backbone`).
    tasks : mapping of str to int
        Task name to number of outputs.
    pretrained : str
        ``"builtin"`` (the backbone's own pretrained weights), a weights file
        path, or ``"none"`` (random init).
    seed : int
        Seeds the random initialisation; each head is seeded by its task name, so
        a task's initial head does not depend on which other tasks exist.
    backbone_options : mapping, optional
        ``backbone-options`` from the experiment.
    """
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        net = build_backbone(backbone, pretrained, backbone_options)
        heads: dict[str, nn.Module] = {}
        for task, outputs in tasks.items():
            torch.manual_seed(seed * 1_000_003 + _stable_hash(task))
            heads[task] = nn.Linear(net.feature_dim, outputs)
    finally:
        torch.random.set_rng_state(generator_state)
    return MultiTaskModel(net, heads)


def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; Ray workers must agree.
    return sum((i + 1) * ord(c) for i, c in enumerate(text)) % 1_000_000
