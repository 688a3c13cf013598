"""``file:<path>``: a backbone saved as a whole module (TorchScript or ``torch.save``).

Pickled modules run arbitrary code when loaded (``weights_only=False``): load
only files you trust. TorchScript archives do not need the module's source.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy.typing as npt
import torch
from torch import nn

from fedmtl.models.backbones import (
    BACKBONE_SCHEMES,
    Backbone,
    BackboneEntry,
    BackboneOptionError,
)
from fedmtl.models.loading import (
    child_blocks,
    choice_option,
    int_option,
    load_weights,
    weights_file,
)

OPTIONS = ("feature-dim", "input-kind")
INPUT_KINDS = ("image", "text", "vector")


class FileBackbone(Backbone):
    """A loaded module as a backbone: float tensors in (raw texts for ``text``).

    Parameters
    ----------
    model : nn.Module
        Maps prepared inputs to ``(batch, feature_dim)`` features.
    feature_dim : int
        Width of the features.
    input_kind : {"image", "text", "vector"}
        Which datasets fit; ``text`` passes the batch's texts as a list of str.
    """

    def __init__(self, model: nn.Module, feature_dim: int, input_kind: str) -> None:
        super().__init__()
        self.model = model
        self.feature_dim = feature_dim
        self.input_kind = input_kind

    def prepare(self, inputs: npt.NDArray[Any], device: torch.device) -> Any:
        """Texts as ``list[str]``; images and vectors as a float tensor on ``device``."""
        if self.input_kind == "text":
            return [str(text) for text in inputs]
        return super().prepare(inputs, device)

    def forward(self, x: Any) -> torch.Tensor:
        """Return ``(batch, feature_dim)`` features of prepared inputs."""
        return self.model(x)  # type: ignore[no-any-return]

    def blocks(self) -> list[tuple[str, ...]]:
        """The module's top-level children with parameters (see ``child_blocks``)."""
        return child_blocks(self.model)


def load_module(path: Path) -> nn.Module:
    """The module saved in ``path``: a TorchScript archive or a pickled ``nn.Module``."""
    if not path.is_file():
        raise FileNotFoundError(f"backbone file '{path}' not found")
    if _is_torchscript(path):
        return torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call,no-any-return]
    loaded = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(loaded, nn.Module):
        raise ValueError(
            f"backbone file '{path}' holds a {type(loaded).__name__}, not an nn.Module: save the "
            "module itself (torch.save(module) or torch.jit.save), or use this file as "
            "pretrained = '<path>' with a registered backbone"
        )
    return loaded


def _is_torchscript(path: Path) -> bool:
    # Both formats are zip archives; only TorchScript's holds compiled code and constants.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def reset_parameters(module: nn.Module) -> int:
    """Re-initialise every submodule that has ``reset_parameters``; return how many."""
    count = 0
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
            count += 1
    return count


def build_file(target: str, pretrained: str, options: Mapping[str, Any]) -> Backbone:
    """Build ``file:<target>``.

    ``builtin`` keeps the weights in the file; ``none`` re-initialises every
    submodule with ``reset_parameters`` (seeded by the caller); a path loads
    that state dict on top (strict). A pickled :class:`Backbone` is used as it
    is (options override its ``feature_dim`` and ``input_kind``); any other
    module is wrapped in :class:`FileBackbone`.
    """
    path = Path(target).expanduser()
    input_kind = choice_option(options, "input-kind", "image", INPUT_KINDS)
    module = load_module(path)
    attribute = getattr(module, "feature_dim", None)
    if "feature-dim" in options:
        feature_dim = int_option(options, "feature-dim", 1)
    elif isinstance(attribute, int):
        feature_dim = attribute
    else:
        raise BackboneOptionError(
            f"backbone 'file:{target}': the module has no integer feature_dim attribute; "
            "set backbone option feature-dim"
        )
    if isinstance(module, Backbone):
        module.feature_dim = feature_dim
        if "input-kind" in options:
            module.input_kind = input_kind
        net: Backbone = module
    else:
        net = FileBackbone(module, feature_dim, input_kind)
    if pretrained == "none" and reset_parameters(net) == 0 and any(True for _ in net.parameters()):
        raise BackboneOptionError(
            f"backbone 'file:{target}' cannot be re-initialised: no submodule has "
            "reset_parameters() (TorchScript keeps only compiled methods); use "
            "pretrained = 'builtin' or a weights file"
        )
    if pretrained not in ("builtin", "none"):
        inner = net.model if isinstance(net, FileBackbone) else net
        load_weights(inner, weights_file(pretrained), "vision")
    return net


BACKBONE_SCHEMES.add(
    "file",
    BackboneEntry(
        build_file,
        OPTIONS,
        "whole module saved with torch.save or TorchScript; 'builtin' = the file's weights",
    ),
)
