"""LoRA adapters on a backbone (through ``peft``): the base stays frozen, adapters train.

``peft.inject_adapter_in_model`` adds ``lora_A``/``lora_B`` next to each target
layer in place, so the backbone keeps its class, ``prepare`` and ``blocks``;
state_dict keys gain ``.base_layer.`` and ``.lora_A.default.`` parts, which the
``lora`` fine-tuning mode's scope pattern relies on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedmtl.models.backbones import Backbone, BackboneOptionError, optional_import


def apply_lora(
    backbone: Backbone,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: Sequence[str] = (),
    seed: int = 0,
) -> Backbone:
    """Inject LoRA adapters into ``backbone`` in place and return it.

    Parameters
    ----------
    backbone : Backbone
        Its pretrained weights become the frozen ``base_layer``.
    rank, alpha, dropout : int, float, float
        LoRA's ``r``, ``lora_alpha`` and ``lora_dropout``.
    targets : sequence of str
        Module-name suffixes to adapt; empty means ``backbone.lora_targets``.
    seed : int
        Seeds the adapters' initialisation (``lora_B`` starts at zero, so the
        adapted backbone computes exactly what the pretrained one does).
    """
    peft = optional_import("peft", "lora", "finetune = 'lora'")
    chosen = list(targets or backbone.lora_targets)
    if not chosen:
        raise BackboneOptionError(
            f"{type(backbone).__name__} names no default LoRA targets; set lora-targets"
        )
    names = [name for name, _ in backbone.named_modules()]
    missing = [t for t in chosen if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        raise BackboneOptionError(
            f"lora-targets {missing} match no module of {type(backbone).__name__}"
        )
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=chosen)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        peft.inject_adapter_in_model(config, backbone)
    finally:
        torch.random.set_rng_state(state)
    return backbone
