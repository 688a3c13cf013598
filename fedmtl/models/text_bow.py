"""``text-bow``: a small hashed bag-of-words text encoder, trained from scratch.

The baseline against pretrained text encoders (``minilm``): lower-case words
and word bigrams are hashed into a fixed number of buckets, averaged by an
``nn.EmbeddingBag`` and projected. Needs no tokenizer and no optional package.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Mapping
from typing import Any

import numpy.typing as npt
import torch
from torch import nn

from fedmtl.models.backbones import (
    BACKBONES,
    Backbone,
    BackboneEntry,
    BackboneUnavailable,
    load_pretrained,
)
from fedmtl.models.loading import int_option, weights_file

OPTIONS = ("buckets", "embedding-dim", "feature-dim")
_WORD = re.compile(r"\w+")
#: The id of a text without words; word and bigram ids are 1 .. buckets - 1.
EMPTY_ID = 0


def token_ids(text: str, buckets: int) -> list[int]:
    """Hashed ids of the words and word bigrams of ``text`` (``[EMPTY_ID]`` if none).

    ``zlib.crc32`` is the same in every process (Python's ``hash`` is salted),
    so clients and server agree on the ids.
    """
    words = _WORD.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    if not grams:
        return [EMPTY_ID]
    return [1 + zlib.crc32(gram.encode("utf-8")) % (buckets - 1) for gram in grams]


class TextBow(Backbone):
    """Hashed words and bigrams -> mean embedding -> linear + ReLU.

    Parameters
    ----------
    buckets : int
        Number of hash buckets (embedding rows), at least 2.
    embedding_dim : int
        Width of the word embeddings.
    feature_dim : int
        Width of the output features.
    """

    input_kind = "text"
    lora_targets = ("proj",)

    def __init__(
        self, buckets: int = 2**15, embedding_dim: int = 64, feature_dim: int = 128
    ) -> None:
        super().__init__()
        self.buckets = buckets
        self.feature_dim = feature_dim
        self.embedding = nn.EmbeddingBag(buckets, embedding_dim, mode="mean")
        self.proj = nn.Linear(embedding_dim, feature_dim)

    def prepare(
        self, inputs: npt.NDArray[Any], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenated token ids of the texts and each text's offset, on ``device``."""
        ids: list[int] = []
        offsets: list[int] = []
        for text in inputs:
            offsets.append(len(ids))
            ids.extend(token_ids(str(text), self.buckets))
        return (
            torch.tensor(ids, dtype=torch.long, device=device),
            torch.tensor(offsets, dtype=torch.long, device=device),
        )

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Return ``(batch, feature_dim)`` features of prepared ``(ids, offsets)``."""
        ids, offsets = batch
        return torch.relu(self.proj(self.embedding(ids, offsets)))

    def blocks(self) -> list[tuple[str, ...]]:
        """embedding, proj."""
        return [("embedding",), ("proj",)]


def _text_bow(pretrained: str, options: Mapping[str, Any]) -> Backbone:
    net = TextBow(
        buckets=int_option(options, "buckets", 2**15, minimum=2),
        embedding_dim=int_option(options, "embedding-dim", 64),
        feature_dim=int_option(options, "feature-dim", 128),
    )
    if pretrained == "builtin":
        raise BackboneUnavailable("text-bow has no pretrained weights; set pretrained = 'none'")
    if pretrained != "none":
        load_pretrained(net, weights_file(pretrained))
    return net


BACKBONES.add(
    "text-bow",
    BackboneEntry(
        _text_bow,
        OPTIONS,
        "hashed bag of words and bigrams (128 features), trained from scratch; no 'builtin'",
    ),
)
