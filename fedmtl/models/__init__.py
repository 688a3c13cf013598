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
