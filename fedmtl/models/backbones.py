"""Backbone registry and pretrained-weight loading.

A backbone is a headless ``nn.Module`` mapping inputs to ``(batch, feature_dim)``
features and reporting ``feature_dim``; task heads are built from it.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedmtl.registry import Registry, RegistryError

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


class BackboneUnavailable(RuntimeError):  # noqa: N818 (names a state, not an error kind)
    """A backbone cannot be built here: an optional package or its weights are missing.

    The message says what to install or which file to provide.
    """


class BackboneOptionError(ValueError):
    """A ``backbone-options`` entry is unknown or has a bad value."""


class Backbone(nn.Module):
    """Base class of headless feature extractors.

    Subclasses set ``feature_dim`` and implement ``forward(prepared) -> (batch,
    feature_dim)``. ``prepare`` turns a slice of the dataset's inputs (numpy) into
    what ``forward`` takes, on ``device``: the default makes a float tensor;
    text backbones tokenize. ``input_kind`` says which datasets fit
    (``"image"``, ``"text"``, ``"vector"``). ``lora_targets`` names the module
    suffixes LoRA adapts when the run does not say.
    """

    feature_dim: int
    input_kind: str = "image"
    lora_targets: tuple[str, ...] = ()

    def prepare(self, inputs: npt.NDArray[Any], device: torch.device) -> Any:
        """Model input for ``inputs`` (a batch slice of the dataset's ``x``)."""
        return torch.as_tensor(np.asarray(inputs, dtype=np.float32), device=device)

    def blocks(self) -> list[tuple[str, ...]]:
        """Module-name prefixes of the backbone's blocks, input to output.

        "Train the last k blocks" trains the last k entries. The default finds
        the longest ``nn.ModuleList`` (transformer layers); without one, every
        top-level child that holds parameters is a block.
        """
        lists = [
            (name, module)
            for name, module in self.named_modules()
            if isinstance(module, nn.ModuleList) and len(module) > 1 and name
        ]
        if lists:
            name, longest = max(lists, key=lambda item: len(item[1]))
            return [(f"{name}.{i}",) for i in range(len(longest))]
        return [
            (name,)
            for name, child in self.named_children()
            if any(True for _ in child.parameters())
        ]


#: ``factory(pretrained, options) -> Backbone`` for names, and
#: ``factory(target, pretrained, options)`` for schemes (``hf:<target>``).
NamedFactory = Callable[[str, Mapping[str, Any]], Backbone]
SchemeFactory = Callable[[str, str, Mapping[str, Any]], Backbone]


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone name (``digits-cnn``) or scheme (``hf``).

    Parameters
    ----------
    factory : callable
        Builds the backbone and loads its weights for ``pretrained``
        (``"builtin"``: the backbone's own pretrained weights, ``"none"``: random
        init, else a path to a weights file).
    options : tuple of str
        The ``backbone-options`` keys it accepts.
    description : str
        One line for docs and errors.
    """

    factory: Any
    options: tuple[str, ...] = ()
    description: str = ""


BACKBONES: Registry[BackboneEntry] = Registry("backbone")
BACKBONE_SCHEMES: Registry[BackboneEntry] = Registry("backbone scheme")


def _entry(name: str) -> tuple[BackboneEntry, str | None]:
    """The registry entry for ``name`` and, for ``scheme:target``, the target."""
    scheme, sep, target = name.partition(":")
    if sep and scheme in BACKBONE_SCHEMES:
        if not target:
            raise BackboneOptionError(f"backbone '{name}' names no model after '{scheme}:'")
        return BACKBONE_SCHEMES.get(scheme), target
    if sep:
        raise RegistryError(
            f"unknown backbone scheme '{scheme}:'; schemes: {BACKBONE_SCHEMES.names()}, "
            f"names: {BACKBONES.names()}"
        )
    return BACKBONES.get(name), None


def check_backbone(name: str, options: Mapping[str, Any]) -> None:
    """Cheap validation of a backbone name and its option keys (nothing is loaded).

    Raises
    ------
    RegistryError
        Unknown name or scheme.
    BackboneOptionError
        An option the backbone does not take.
    """
    entry, _ = _entry(name)
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        allowed = list(entry.options) or "none"
        raise BackboneOptionError(
            f"backbone '{name}' has no option {unknown[0]!r}; allowed options: {allowed}"
        )


def build_backbone(
    name: str, pretrained: str = "none", options: Mapping[str, Any] | None = None
) -> Backbone:
    """Build backbone ``name`` with the weights ``pretrained`` asks for.

    Parameters
    ----------
    name : str
        A registered name (``digits-cnn``, ``minilm``, ``text-bow``) or
        ``scheme:target`` (``hf:<model id or dir>``, ``torchvision:<name>``,
        ``timm:<name>``, ``file:<path>``).
    pretrained : str
        ``"builtin"``, ``"none"`` or a weights file path.
    options : mapping, optional
        ``backbone-options`` from the experiment.
    """
    options = dict(options or {})
    check_backbone(name, options)
    entry, target = _entry(name)
    if target is None:
        return entry.factory(pretrained, options)  # type: ignore[no-any-return]
    return entry.factory(target, pretrained, options)  # type: ignore[no-any-return]


def optional_import(module: str, extra: str, what: str) -> Any:
    """Import an optional dependency or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackboneUnavailable(
            f"{what} needs the package '{module}' ({exc}); install it with "
            f"`pip install 'fedmtl[{extra}]'`"
        ) from None


class DigitsCNN(Backbone):
    """A small CNN for 8x8 grayscale digits (about 25k parameters).

    Two conv blocks with batch norm (so buffers exist and must be scoped too),
    then a linear projection to ``feature_dim`` features.
    """

    lora_targets = ("conv1", "conv2", "proj")

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

    def blocks(self) -> list[tuple[str, ...]]:
        """conv1+bn1, conv2+bn2, proj."""
        return [("conv1", "bn1"), ("conv2", "bn2"), ("proj",)]


def _digits_cnn(pretrained: str, options: Mapping[str, Any]) -> Backbone:
    net = DigitsCNN()
    path = resolve_pretrained(pretrained, "digits-cnn")
    if path is not None:
        load_pretrained(net, path)
    return net


BACKBONES.add(
    "digits-cnn",
    BackboneEntry(
        _digits_cnn, description="small CNN for 8x8 digits; 'builtin' = shipped checkpoint"
    ),
)


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
