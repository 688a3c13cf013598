"""Helpers shared by the library backbone loaders (``hf``, ``torchvision``, ``timm``, ``file``).

They wrap a library model in a :class:`~fedmtl.models.backbones.Backbone` as
its ``model`` attribute, so state_dict keys read ``model.<library key>``.
Weights files may hold either those keys (what fedmtl saves) or the library
model's own keys (what the library saves).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedmtl.models.backbones import BackboneOptionError, optional_import

INNER = "model"

# Attention projections LoRA adapts by default, most specific first.
_LORA_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("query", "value"),  # BERT, RoBERTa, MiniLM
    ("q_proj", "v_proj"),  # LLaMA, OPT, BART, Mistral
    ("q_lin", "v_lin"),  # DistilBERT
    ("c_attn",),  # GPT-2
    ("qkv",),  # timm ViT, Swin
)


def int_option(options: Mapping[str, Any], key: str, default: int, minimum: int = 1) -> int:
    """The integer option ``key`` (at least ``minimum``), or ``default``."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BackboneOptionError(f"backbone option '{key}' must be an integer >= {minimum}")
    return value


def choice_option(
    options: Mapping[str, Any], key: str, default: str, choices: Collection[str]
) -> str:
    """The option ``key``, one of ``choices``, or ``default``."""
    value = options.get(key, default)
    if value not in choices:
        raise BackboneOptionError(
            f"backbone option '{key}' must be one of {sorted(choices)}, got {value!r}"
        )
    return str(value)


def weights_file(pretrained: str) -> Path:
    """``pretrained`` as an existing weights file path."""
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights '{path}' not found: give a state dict file "
            "(torch.save or .safetensors), 'builtin' or 'none'"
        )
    return path


def read_state_dict(path: Path, extra: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, without the ``backbone.`` key prefix.

    Reads ``torch.save`` files (a plain state dict or fedmtl's
    ``{"state_dict": ..., "meta": ...}``) and ``.safetensors`` files.
    """
    if path.suffix == ".safetensors":
        safetensors = optional_import("safetensors.torch", extra, f"reading '{path}'")
        state: Mapping[str, Any] = safetensors.load_file(str(path))
    else:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(loaded, Mapping):
            raise ValueError(f"weights file '{path}' holds a {type(loaded).__name__}, not a dict")
        state = loaded.get("state_dict", loaded)
    return {k.removeprefix("backbone."): v for k, v in state.items()}


def load_weights(model: nn.Module, path: Path, extra: str, dropped: Collection[str] = ()) -> None:
    """Load the weights file ``path`` into the library ``model``, strictly.

    Keys under ``dropped`` prefixes (a classifier or pooler the backbone
    removed) are ignored; every other key must match.
    """
    state = read_state_dict(path, extra)
    expected = model.state_dict().keys()
    # fedmtl saves the wrapper's keys (model.*); libraries save the model's own.
    if all(k.startswith(f"{INNER}.") for k in state) and not state.keys() <= expected:
        state = {k.removeprefix(f"{INNER}."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not any(k.startswith(p) for p in dropped)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"weights file '{path}' does not fit this backbone: {exc}") from None


def child_blocks(model: nn.Module, prefix: str = INNER) -> list[tuple[str, ...]]:
    """Blocks of a wrapped library ``model``, input to output, named with ``prefix``.

    The top-level children that hold parameters, except that a child holding a
    stack of layers (a ``Sequential``/``ModuleList`` of at least 4 entries with
    more than half of all parameters: ViT blocks, MobileNet features) is
    split into its entries, so "the last k blocks" means the last k layers.
    """
    total = _size(model)
    return _blocks(model, prefix, total) if total else []


def _blocks(module: nn.Module, prefix: str, total: int) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, child in module.named_children():
        size, full = _size(child), f"{prefix}.{name}"
        if size == 0:
            continue
        if 2 * size <= total or not any(_is_stack(m, total) for m in child.modules()):
            found.append((full,))
        elif _is_stack(child, total):
            found += [(f"{full}.{n}",) for n, entry in child.named_children() if _size(entry)]
        else:
            found += _blocks(child, full, total)
    return found


def _is_stack(module: nn.Module, total: int) -> bool:
    if not isinstance(module, nn.Sequential | nn.ModuleList):
        return False
    return len(module) >= 4 and 2 * _size(module) > total


def _size(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def detect_lora_targets(model: nn.Module) -> tuple[str, ...]:
    """Default LoRA target suffixes: the attention projections found in ``model``."""
    leaves = {name.rpartition(".")[2] for name, _ in model.named_modules()}
    for candidate in _LORA_CANDIDATES:
        if all(target in leaves for target in candidate):
            return candidate
    return ()
