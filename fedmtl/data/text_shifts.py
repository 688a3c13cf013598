r"""Input shifts for text (feature skew of words): a client's typing style and its dialect.

Both act on *words*: maximal runs of at least two letters (``[^\W\d_]{2,}``);
spaces, punctuation, digits and one-letter words are never touched, and an
edited word stays a (non-empty) run of letters, so a text keeps its number of
letter runs (``[^\W\d_]+``; a two-letter word may lose a letter).
The probability ``p = level * strength`` must be in ``[0, 1]``; at ``p = 0``
the texts come back unchanged.

``typos`` (a style source)
    Every word is corrupted independently with probability ``p`` by one
    character edit. The draws of example ``k`` come from its own generator
    ``default_rng([key, k])`` (``key`` drawn once from the client's split
    generator), so an example's typos depend on (seed, client, split,
    example) only. For an example with ``n`` words, three vectors of ``n`` draws
    are taken in order: ``u = random(n)``, ``kind = integers(3, size=n)`` and
    ``f = random(n)``; word ``i`` (of ``L`` letters) is corrupted when
    ``u[i] < p``:

    * kind 0 swaps letters ``j`` and ``j + 1``, ``j`` the ``floor(f * m)``-th of
      the ``m`` positions whose two letters differ (``m = 0``, as in ``"aa"``:
      a double instead, so every corrupted word changes);
    * kind 1 drops letter ``floor(f * L)``;
    * kind 2 doubles letter ``floor(f * L)``.

``vocabulary`` (a dialect source)
    A seeded share ``p`` of the word *types* is replaced, wherever it occurs
    (train and test alike), by a pseudo-word of the client's own dialect:
    a blake2b hash of the lower-cased word, keyed by ``key`` (drawn once from
    the group's generator), gives a uniform ``u`` (first 8 bytes; replaced when
    ``u < p``) and the pseudo-word (``max(3, ceil(L / 2))`` consonant-vowel
    syllables, at most 12, from the next bytes). The word's case is kept
    (``UPPER``, ``Capitalised`` or lower). The same word always becomes the same
    pseudo-word in one dialect, so the text stays learnable there, but a model
    trained on another dialect has never seen it. The pseudo-words are not
    real synonyms (no offline thesaurus backs them), may by chance be real
    words, and two words may (rarely, for short words) share one.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["WORD", "pseudo_word", "typo_text", "typos", "vocabulary", "vocabulary_text"]

WORD = re.compile(r"[^\W\d_]{2,}")
_CONSONANTS = "bcdfghjklmnprstvz"
_VOWELS = "aeiou"
_MAX_SYLLABLES = 12


def _probability(level: float, strength: float) -> float:
    p = level * strength
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        raise ValueError(f"level * strength must be a probability in [0, 1], got {p}")
    return p


def _texts_like(x: npt.NDArray[Any], texts: list[str]) -> npt.NDArray[Any]:
    out = np.empty(len(texts), dtype=object)
    out[:] = texts
    return out.astype(x.dtype) if x.dtype.kind == "U" else out


def _map_texts(x: npt.NDArray[Any], edit: Callable[[int, str], str]) -> npt.NDArray[Any]:
    if x.ndim != 1:
        raise ValueError(f"text inputs must be a 1-D array of str, got shape {x.shape}")
    texts: list[str] = []
    for k, text in enumerate(x.tolist()):
        if not isinstance(text, str):
            raise TypeError(f"text inputs must be str, example {k} is {type(text).__name__}")
        texts.append(edit(k, text))
    return _texts_like(x, texts)


# --- typos ----------------------------------------------------------------------------


def _typo(word: str, kind: int, f: float) -> str:
    if kind == 0:
        differ = [j for j in range(len(word) - 1) if word[j] != word[j + 1]]
        if differ:
            j = differ[int(f * len(differ))]
            return word[:j] + word[j + 1] + word[j] + word[j + 2 :]
        kind = 2
    i = int(f * len(word))
    if kind == 1:
        return word[:i] + word[i + 1 :]
    return word[: i + 1] + word[i:]


def typo_text(text: str, p: float, rng: np.random.Generator) -> str:
    """``text``, each word corrupted with probability ``p`` (module rule, ``rng``'s draws)."""
    words = list(WORD.finditer(text))
    if not words or p == 0.0:
        return text
    n = len(words)
    u, kinds, fs = rng.random(n), rng.integers(3, size=n), rng.random(n)
    pieces: list[str] = []
    end = 0
    for match, ui, kind, f in zip(words, u, kinds, fs, strict=True):
        if ui < p:
            pieces += [text[end : match.start()], _typo(match.group(), int(kind), float(f))]
            end = match.end()
    return "".join([*pieces, text[end:]])


def typos(
    x: npt.NDArray[Any],
    level: float,
    strength: float,
    rng: np.random.Generator,
    value_range: tuple[float, float],
) -> npt.NDArray[Any]:
    """Corrupt each word with probability ``level * strength`` by one typo (module docstring)."""
    del value_range
    p = _probability(level, strength)
    key = int(rng.integers(2**63))
    if p == 0.0:
        return x.copy()
    return _map_texts(x, lambda k, text: typo_text(text, p, np.random.default_rng([key, k])))


# --- vocabulary -------------------------------------------------------------------------


def pseudo_word(word: str, key: int) -> tuple[float, str]:
    """The uniform draw and dialect pseudo-word of ``word`` (lower-cased) under ``key``."""
    lower = word.lower()
    digest = hashlib.blake2b(
        lower.encode("utf-8"), key=key.to_bytes(8, "little"), digest_size=8 + 2 * _MAX_SYLLABLES
    ).digest()
    u = int.from_bytes(digest[:8], "little") / 2.0**64
    syllables = min(_MAX_SYLLABLES, max(3, math.ceil(len(lower) / 2)))
    body = digest[8:]
    pseudo = "".join(
        _CONSONANTS[body[2 * s] % len(_CONSONANTS)] + _VOWELS[body[2 * s + 1] % len(_VOWELS)]
        for s in range(syllables)
    )
    return u, pseudo


def _with_case(word: str, pseudo: str) -> str:
    if word.isupper():
        return pseudo.upper()
    if word[0].isupper():
        return pseudo.capitalize()
    return pseudo


def vocabulary_text(text: str, p: float, key: int, cache: dict[str, str | None]) -> str:
    """``text`` in the dialect ``key``: a share ``p`` of word types replaced (module rule)."""

    def replace(match: re.Match[str]) -> str:
        word = match.group()
        lower = word.lower()
        if lower not in cache:
            u, pseudo = pseudo_word(lower, key)
            cache[lower] = pseudo if u < p else None
        pseudo_or_none = cache[lower]
        return word if pseudo_or_none is None else _with_case(word, pseudo_or_none)

    return WORD.sub(replace, text)


def vocabulary(
    x: npt.NDArray[Any],
    level: float,
    strength: float,
    rng: np.random.Generator,
    value_range: tuple[float, float],
) -> npt.NDArray[Any]:
    """Replace a share ``level * strength`` of the word types by dialect pseudo-words."""
    del value_range
    p = _probability(level, strength)
    key = int(rng.integers(2**63))
    if p == 0.0:
        return x.copy()
    cache: dict[str, str | None] = {}
    return _map_texts(x, lambda k, text: vocabulary_text(text, p, key, cache))
