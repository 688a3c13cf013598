"""Backbone registry and pretrained-weight loading.

A backbone is a headless ``nn.Module`` mapping inputs to ``(batch, feature_dim)``
features and reporting ``feature_dim``; task heads are built from it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedmtl.registry import Registry

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


class Backbone(nn.Module):
    """Base class: subclasses set ``feature_dim`` and implement ``forward``."""

    feature_dim: int


BACKBONES: Registry[Callable[[], Backbone]] = Registry("backbone")


@BACKBONES.register("digits-cnn")
class DigitsCNN(Backbone):
    """A small CNN for 8x8 grayscale digits (about 25k parameters).

    Two conv blocks with batch norm (so buffers exist and must be scoped too),
    then a linear projection to ``feature_dim`` features.
    """

    def __init__(self, feature_dim: int = 64) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.proj = nn.Linear(32 * 2 * 2, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``(batch, feature_dim)`` features of ``(batch, 1, 8, 8)`` images."""
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = nn.functional.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return torch.relu(self.proj(x.flatten(1)))


def build_backbone(name: str) -> Backbone:
    """Instantiate the registered backbone ``name`` with random weights."""
    return BACKBONES.get(name)()


def builtin_checkpoint(backbone: str) -> Path:
    """Path of the checkpoint shipped with fedmtl for ``backbone``.

    Looks beside this module first, then in the installed ``fedmtl`` distribution:
    ``flwr run`` copies the app's code without binary files, so the copy it runs
    finds the weights through the installed package.
    """
    name = f"{backbone}.pt"
    candidates = [PRETRAINED_DIR / name, *_installed_pretrained_dirs(name)]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _installed_pretrained_dirs(name: str) -> list[Path]:
    from importlib import metadata

    try:
        dist = metadata.distribution("fedmtl")
    except metadata.PackageNotFoundError:
        return []
    found = [Path(str(dist.locate_file(f"fedmtl/pretrained/{name}")))]
    direct_url = dist.read_text("direct_url.json")  # editable installs point at the source
    if direct_url:
        url = json.loads(direct_url).get("url", "")
        if url.startswith("file://"):
            found.append(Path(url.removeprefix("file://")) / "fedmtl" / "pretrained" / name)
    return found


def resolve_pretrained(pretrained: str, backbone: str) -> Path | None:
    """Turn the config's ``pretrained`` value into a file path (``None``: random init)."""
    if pretrained == "none":
        return None
    path = builtin_checkpoint(backbone) if pretrained == "builtin" else Path(pretrained)
    if not path.is_file():
        hint = (
            f"run `fedmtl pretrain --backbone {backbone}` to create it"
            if pretrained == "builtin"
            else "give a path to a checkpoint written by `fedmtl pretrain` or torch.save"
        )
        raise FileNotFoundError(f"pretrained weights '{path}' not found: {hint}")
    return path


def load_pretrained(backbone: Backbone, path: Path) -> dict[str, Any]:
    """Load backbone weights from ``path`` (strict); return the checkpoint's metadata.

    The file holds either a plain state_dict or ``{"state_dict": ..., "meta": ...}``
    (what ``fedmtl pretrain`` writes). Keys may carry a ``backbone.`` prefix.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint)
    meta = checkpoint.get("meta", {}) if "state_dict" in checkpoint else {}
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint '{path}' does not fit this backbone: {exc}") from None
    return dict(meta)
