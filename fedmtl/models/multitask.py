"""The multi-task model: one shared backbone, one head per task."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from fedmtl.models.backbones import Backbone, build_backbone, load_pretrained, resolve_pretrained


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

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        """Return the logits of ``task`` for inputs ``x``."""
        return self.heads[task](self.backbone(x))  # type: ignore[no-any-return]


def build_model(
    backbone: str,
    tasks: Mapping[str, int],
    pretrained: str = "none",
    seed: int = 0,
) -> MultiTaskModel:
    """Build the model deterministically: same arguments, same initial weights.

    Parameters
    ----------
    backbone : str
        Registered backbone name.
    tasks : mapping of str to int
        Task name to number of outputs.
    pretrained : str
        ``"builtin"`` (the shipped checkpoint), a checkpoint path, or ``"none"``.
    seed : int
        Seeds the random initialisation; each head is seeded by its task name, so
        a task's initial head does not depend on which other tasks exist.
    """
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        net = build_backbone(backbone)
        heads: dict[str, nn.Module] = {}
        for task, outputs in tasks.items():
            torch.manual_seed(seed * 1_000_003 + _stable_hash(task))
            heads[task] = nn.Linear(net.feature_dim, outputs)
    finally:
        torch.random.set_rng_state(generator_state)
    path = resolve_pretrained(pretrained, backbone)
    if path is not None:
        load_pretrained(net, path)
    return MultiTaskModel(net, heads)


def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; Ray workers must agree.
    return sum((i + 1) * ord(c) for i, c in enumerate(text)) % 1_000_000
