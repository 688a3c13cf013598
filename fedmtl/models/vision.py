"""Image backbones from libraries: the ``torchvision:<name>`` and ``timm:<name>`` schemes.

``torchvision`` and ``timm`` are imported only when such a backbone is built
(extra ``vision``). ``builtin`` weights are downloaded by the library (and
cached in ``~/.cache/torch/hub`` or the Hugging Face cache); without network
access, give the weights file as ``pretrained`` instead.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedmtl.models.backbones import (
    BACKBONE_SCHEMES,
    Backbone,
    BackboneEntry,
    BackboneUnavailable,
    optional_import,
)
from fedmtl.models.loading import (
    child_blocks,
    choice_option,
    detect_lora_targets,
    int_option,
    load_weights,
    weights_file,
)
from fedmtl.registry import RegistryError

OPTIONS = ("image-size", "normalize")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VisionBackbone(Backbone):
    """A headless library image model plus its input preprocessing.

    Parameters
    ----------
    model : nn.Module
        Maps ``(batch, C, H, W)`` images to ``(batch, feature_dim)`` features.
    feature_dim : int
        Width of the features.
    image_size : int or None
        Inputs are resized to this square size; ``None`` keeps their size.
    mean, std : sequence of float or None
        Per-channel normalisation applied after resizing; ``None`` skips it.
    """

    input_kind = "image"

    def __init__(
        self,
        model: nn.Module,
        feature_dim: int,
        image_size: int | None,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
    ) -> None:
        super().__init__()
        self.model = model
        self.feature_dim = feature_dim
        self.image_size = image_size
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None
        self.in_channels = _in_channels(model)
        self.lora_targets = detect_lora_targets(model)

    def prepare(self, inputs: npt.NDArray[Any], device: torch.device) -> torch.Tensor:
        """``(N, C, H, W)`` float images, grayscale repeated to RGB, resized and normalised."""
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32), device=device)
        if x.ndim == 3:  # (N, H, W) grayscale
            x = x.unsqueeze(1)
        if x.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] == 1 and self.in_channels == 3:
            x = x.repeat(1, 3, 1, 1)
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size,) * 2:
            size = (self.image_size, self.image_size)
            x = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if self.mean is not None and self.std is not None:
            if x.shape[1] != len(self.mean):
                raise ValueError(
                    f"normalize has {len(self.mean)} channel statistics but the images have "
                    f"{x.shape[1]} channels; set backbone option normalize = 'none'"
                )
            mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``(batch, feature_dim)`` features of prepared images."""
        return self.model(x)  # type: ignore[no-any-return]

    def blocks(self) -> list[tuple[str, ...]]:
        """The library model's top-level stages (``model.layer1``, ...), see ``child_blocks``."""
        return child_blocks(self.model)


def _in_channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


def _preprocessing(
    options: Mapping[str, Any], mean: Sequence[float], std: Sequence[float]
) -> tuple[int | None, Sequence[float] | None, Sequence[float] | None]:
    size = int_option(options, "image-size", 1) if "image-size" in options else None
    if choice_option(options, "normalize", "imagenet", ("imagenet", "none")) == "none":
        return size, None, None
    return size, mean, std


def _download_failed(label: str, exc: Exception, source: str, hint: str) -> BackboneUnavailable:
    return BackboneUnavailable(
        f"backbone '{label}': the pretrained weights could not be downloaded ({exc}). "
        f'Download them elsewhere ({source}) and set pretrained = "/path/to/weights.pth" '
        "(a state dict of the full library model, .pth or .safetensors), or set "
        f'pretrained = "none" for random weights. {hint}'
    )


def strip_classifier(model: nn.Module) -> tuple[str, int]:
    """Replace the last ``nn.Linear`` of ``model`` with ``nn.Identity``.

    Returns its name and ``in_features`` (the feature width of the headless model).
    """
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to remove")
    name, last = linears[-1]
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, nn.Identity())
    return name, last.in_features


def build_torchvision(target: str, pretrained: str, options: Mapping[str, Any]) -> VisionBackbone:
    """Build ``torchvision:<target>`` (``torchvision.models.get_model``) without its classifier.

    ``builtin`` loads the DEFAULT weights of ``get_model_weights(target)``.
    """
    label = f"torchvision:{target}"
    image_size, mean, std = _preprocessing(options, IMAGENET_MEAN, IMAGENET_STD)
    path = weights_file(pretrained) if pretrained not in ("builtin", "none") else None
    tv = optional_import("torchvision", "vision", f"backbone '{label}'")
    known = tv.models.list_models()
    if target not in known:
        close = difflib.get_close_matches(target, known, n=3)
        raise RegistryError(f"torchvision has no model '{target}'; close names: {close}")
    weights = tv.models.get_model_weights(target).DEFAULT if pretrained == "builtin" else None
    try:
        model = tv.models.get_model(target, weights=weights)
    except OSError as exc:  # URLError and socket errors are OSErrors
        cache = f"{torch.hub.get_dir()}/checkpoints/"
        hint = f"Or copy the file into {cache}, where torchvision looks first."
        source = weights.url if weights is not None else target
        raise _download_failed(label, exc, source, hint) from None
    classifier, feature_dim = strip_classifier(model)
    if path is not None:
        load_weights(model, path, "vision", dropped=(f"{classifier}.",))
    return VisionBackbone(model, feature_dim, image_size, mean, std)


def build_timm(target: str, pretrained: str, options: Mapping[str, Any]) -> VisionBackbone:
    """Build ``timm:<target>`` headless (``num_classes=0``).

    ``builtin`` is ``timm.create_model(target, pretrained=True)``; normalisation
    uses the model's ``pretrained_cfg`` mean and std.
    """
    label = f"timm:{target}"
    path = weights_file(pretrained) if pretrained not in ("builtin", "none") else None
    timm = optional_import("timm", "vision", f"backbone '{label}'")
    architecture = target.partition(".")[0]  # without the pretrained tag (resnet18.a1_in1k)
    if not timm.is_model(architecture):
        close = difflib.get_close_matches(architecture, timm.list_models(), n=3)
        raise RegistryError(f"timm has no model '{target}'; close names: {close}")
    if pretrained == "builtin":
        try:
            model = timm.create_model(target, pretrained=True, num_classes=0)
        except (OSError, RuntimeError) as exc:  # hub errors are OSErrors; no weights: Runtime
            cfg = timm.get_pretrained_cfg(target)
            hub_id = cfg.hf_hub_id if cfg is not None else None
            source = f"https://huggingface.co/{hub_id}" if hub_id else target
            hint = "Set HF_HUB_OFFLINE=1 to fail at once instead of retrying downloads."
            raise _download_failed(label, exc, source, hint) from None
    else:
        model = timm.create_model(target, pretrained=False, num_classes=0)
    cfg = model.pretrained_cfg
    image_size, mean, std = _preprocessing(
        options, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    )
    if path is not None:
        classifiers = cfg.get("classifier") or ()
        names = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
        load_weights(model, path, "vision", dropped=tuple(f"{name}." for name in names))
    # Some heads widen the pooled features (MobileNetV3): head_hidden_size is the output width.
    feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    return VisionBackbone(model, feature_dim, image_size, mean, std)


BACKBONE_SCHEMES.add(
    "torchvision",
    BackboneEntry(
        build_torchvision,
        OPTIONS,
        "torchvision.models model without its classifier; 'builtin' = DEFAULT weights",
    ),
)
BACKBONE_SCHEMES.add(
    "timm",
    BackboneEntry(build_timm, OPTIONS, "timm model, headless; 'builtin' = its pretrained weights"),
)
