"""Checks on what a backbone plug-in returns, before any client trains with it.

Run once per run (:func:`fedmtl.run_model.check_run_inputs`) and by the
contract tests over every registered backbone.
"""

from __future__ import annotations

from typing import Any

import numpy.typing as npt
import torch

from fedmtl.models.backbones import Backbone


class BackboneContractError(ValueError):
    """A backbone plug-in returned something the rest of fedmtl cannot use."""


def backbone_features(backbone: Backbone, inputs: npt.NDArray[Any]) -> torch.Tensor:
    """Features of ``inputs`` in eval mode, without gradients; every module's mode is restored.

    Nothing of the backbone changes (eval mode: no batch-norm statistics updated,
    no dropout drawn from the random generators).
    """
    modes = {module: module.training for module in backbone.modules()}
    first = next(backbone.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    backbone.eval()
    try:
        with torch.no_grad():
            return backbone(backbone.prepare(inputs, device))  # type: ignore[no-any-return]
    finally:
        for module, mode in modes.items():
            module.training = mode


def check_backbone_output(label: str, backbone: Backbone, inputs: npt.NDArray[Any]) -> None:
    """``backbone`` is headless: finite ``(len(inputs), feature_dim)`` features.

    Raises
    ------
    BackboneContractError
        Naming the backbone (``label``) and what is wrong.
    """
    if not isinstance(backbone, Backbone):
        raise BackboneContractError(
            f"backbone '{label}' built a {type(backbone).__name__}, not a fedmtl Backbone"
        )
    dim = getattr(backbone, "feature_dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise BackboneContractError(f"backbone '{label}' reports feature_dim {dim!r}")
    features = backbone_features(backbone, inputs)
    expected = (len(inputs), dim)
    if not isinstance(features, torch.Tensor) or tuple(features.shape) != expected:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        raise BackboneContractError(
            f"backbone '{label}' returned {shape} for {len(inputs)} inputs; a headless "
            f"backbone returns (batch, feature_dim) = {expected}"
        )
    if not torch.isfinite(features).all():
        raise BackboneContractError(f"backbone '{label}' returned NaN or infinite features")
