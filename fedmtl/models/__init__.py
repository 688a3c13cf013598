"""Backbones, task heads and the multi-task model (plain torch, no Flower types)."""

from fedmtl.models.backbones import (
    BACKBONE_SCHEMES,
    BACKBONES,
    Backbone,
    BackboneEntry,
    BackboneOptionError,
    BackboneUnavailable,
    build_backbone,
    check_backbone,
    load_pretrained,
)
from fedmtl.models.multitask import MultiTaskModel, build_model

# Imported for their registrations: minilm, text-bow and the hf, torchvision, timm and
# file schemes. Their optional packages are imported only when a backbone is built.
from fedmtl.models import file, hf, text_bow, vision  # noqa: F401  isort: skip

__all__ = [
    "BACKBONES",
    "BACKBONE_SCHEMES",
    "Backbone",
    "BackboneEntry",
    "BackboneOptionError",
    "BackboneUnavailable",
    "MultiTaskModel",
    "build_backbone",
    "build_model",
    "check_backbone",
    "load_pretrained",
]
