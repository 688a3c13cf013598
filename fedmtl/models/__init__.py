"""Backbones, task heads and the multi-task model (plain torch, no Flower types)."""

from fedmtl.models.backbones import BACKBONES, Backbone, build_backbone, load_pretrained
from fedmtl.models.multitask import MultiTaskModel, build_model

__all__ = [
    "BACKBONES",
    "Backbone",
    "MultiTaskModel",
    "build_backbone",
    "build_model",
    "load_pretrained",
]
