"""Text input shifts (``typos``, ``vocabulary``): by hand, by proportion, and in a federation."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedmtl.data.federation import ClientData
from fedmtl.data.fortunes import DEFAULT_FORTUNES_DIR
from fedmtl.data.partition_spec import PartitionSpec
from fedmtl.data.shifts import client_levels, shift_inputs
from fedmtl.data.text_shifts import (
    WORD,
    _typo,
    pseudo_word,
    typo_text,
    typos,
    vocabulary,
    vocabulary_text,
)
from fedmtl.data.wordnet import DEFAULT_WORDNET_DIR
from tests.federation_helpers import one_task_federation

NO_RANGE = (0.0, 0.0)
LETTER_RUN = re.compile(r"[^\W\d_]+")


def _texts(*texts: str) -> np.ndarray:
    x = np.empty(len(texts), dtype=object)
    x[:] = texts
    return x


def _shift(name: str, x: np.ndarray, **changes: float) -> np.ndarray:
    args: dict[str, float] = {"level": 1.0, "strength": 1.0, "seed": 0, "client_id": 0, "split": 0}
    args.update(changes)
    return shift_inputs(
        name,
        x,
        level=args["level"],
        strength=args["strength"],
        seed=int(args["seed"]),
        client_id=int(args["client_id"]),
        split=int(args["split"]),
        value_range=NO_RANGE,
    )


def _one_edit_away(word: str, typo: str) -> bool:
    """Whether ``typo`` is ``word`` with adjacent letters swapped, one dropped or one doubled."""
    swaps = {word[:j] + word[j + 1] + word[j] + word[j + 2 :] for j in range(len(word) - 1)}
    drops = {word[:i] + word[i + 1 :] for i in range(len(word))}
    doubles = {word[: i + 1] + word[i:] for i in range(len(word))}
    return typo != word and typo in swaps | drops | doubles


def _random_words(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, size=rng.integers(3, 9))) for _ in range(n)]


# --- typos by hand -----------------------------------------------------------------


def test_each_typo_kind_by_hand() -> None:
    # swap: the floor(f * m)-th position whose letters differ ("cat": positions 0, 1)
    assert _typo("cat", 0, 0.0) == "act" and _typo("cat", 0, 0.9) == "cta"
    assert _typo("book", 0, 0.6) == "boko"  # differing positions 0 (b,o) and 2 (o,k)
    assert _typo("aa", 0, 0.3) == "aaa"  # nothing to swap: a double instead
    # drop / double letter floor(f * L)
    assert _typo("cat", 1, 0.5) == "ct" and _typo("cat", 1, 0.99) == "ca"
    assert _typo("cat", 2, 0.0) == "ccat" and _typo("cat", 2, 0.7) == "catt"


def test_typo_text_follows_the_documented_draws() -> None:
    text = "The cat sat, 2 a mat!"  # words: The, cat, sat, mat ("a" and "2" are not words)
    g = np.random.default_rng([7, 0])
    np.testing.assert_allclose(g.random(4), [0.625, 0.897, 0.776, 0.225], atol=1e-3)
    assert g.integers(3, size=4).tolist() == [0, 0, 0, 2]
    np.testing.assert_allclose(g.random(4), [0.005, 0.821, 0.797, 0.468], atol=1e-3)
    # p = 1: The swaps position 0 of 2; cat, sat swap position floor(0.8 * 2) = 1; mat
    # doubles letter floor(0.468 * 3) = 1.
    assert typo_text(text, 1.0, np.random.default_rng([7, 0])) == "hTe cta sta, 2 a maat!"
    # p = 0.5: only mat's u (0.225) is below p
    assert typo_text(text, 0.5, np.random.default_rng([7, 0])) == "The cat sat, 2 a maat!"


def test_every_word_gets_exactly_one_edit_at_full_strength() -> None:
    x = _texts("Hello, wonderful world: 42 apples & a pear.", "Zoo keeper's llama")
    out = _shift("typos", x)
    for before, after in zip(x, out, strict=True):
        assert re.sub(r"[^\W\d_]", "", before) == re.sub(r"[^\W\d_]", "", after)  # rest kept
        old, new = LETTER_RUN.findall(before), LETTER_RUN.findall(after)
        assert len(old) == len(new)
        for word, typo in zip(old, new, strict=True):
            assert typo == word if len(word) < 2 else _one_edit_away(word, typo)


def test_typos_at_level_0_keep_the_texts_and_their_type() -> None:
    x = _texts("some text", "more text")
    out = typos(x, 0.0, 1.0, np.random.default_rng(0), NO_RANGE)
    assert out.tolist() == x.tolist() and out is not x and out.dtype == object
    unicode = np.array(["some text", "a b"])
    shifted = typos(unicode, 1.0, 1.0, np.random.default_rng(0), NO_RANGE)
    assert shifted.dtype.kind == "U" and shifted.shape == (2,)
    assert shifted[0] != "some text" and shifted[1] == "a b"


def test_typos_are_seeded_per_client_split_and_example() -> None:
    x = _texts(*[" ".join(_random_words(12, seed)) for seed in range(6)])
    first = _shift("typos", x, strength=0.5)
    assert first.tolist() == _shift("typos", x, strength=0.5).tolist()
    assert first.tolist() != _shift("typos", x, strength=0.5, client_id=1).tolist()
    assert first.tolist() != _shift("typos", x, strength=0.5, split=1).tolist()
    assert first.tolist() != _shift("typos", x, strength=0.5, seed=1).tolist()
    # an example's typos do not depend on the other examples
    other = x.copy()
    other[0] = "completely different words here"
    assert _shift("typos", other, strength=0.5)[1:].tolist() == first[1:].tolist()


def test_share_of_typos_is_level_times_strength() -> None:
    words = _random_words(20_000, seed=3)
    x = _texts(*[" ".join(words[i : i + 10]) for i in range(0, len(words), 10)])
    out = _shift("typos", x, level=0.5, strength=0.3)  # p = 0.15
    changed = [
        a != b
        for before, after in zip(x, out, strict=True)
        for a, b in zip(before.split(), after.split(), strict=True)
    ]
    assert len(changed) == 20_000
    assert np.mean(changed) == pytest.approx(0.15, abs=0.01)  # binomial std 0.0025


# --- vocabulary -----------------------------------------------------------------------


def test_pseudo_words_are_consonant_vowel_syllables_keyed_by_the_dialect() -> None:
    u, cat = pseudo_word("cat", 5)
    assert 0.0 <= u < 1.0
    assert pseudo_word("CAT", 5) == (u, cat)  # keyed by the lower-cased word
    assert re.fullmatch(r"([bcdfghjklmnprstvz][aeiou]){3}", cat)  # max(3, ceil(3/2)) syllables
    assert len(pseudo_word("international", 5)[1]) == 2 * 7  # ceil(13 / 2) syllables
    assert pseudo_word("cat", 6) != (u, cat)


def test_vocabulary_replaces_every_word_type_consistently_at_full_strength() -> None:
    x = _texts("The cat sat on a mat.", "THE CAT, the Cat: 3 cats")
    out = vocabulary(x, 1.0, 1.0, np.random.default_rng(0), NO_RANGE)
    key = int(np.random.default_rng(0).integers(2**63))
    the, cat = pseudo_word("the", key)[1], pseudo_word("cat", key)[1]
    sat, on, mat = (pseudo_word(w, key)[1] for w in ("sat", "on", "mat"))
    cats = pseudo_word("cats", key)[1]
    assert out[0] == f"{the.capitalize()} {cat} {sat} {on} a {mat}."
    assert out[1] == f"{the.upper()} {cat.upper()}, {the} {cat.capitalize()}: 3 {cats}"


def test_vocabulary_share_of_word_types_and_level_0() -> None:
    words = sorted(set(_random_words(6_000, seed=4)))
    x = _texts(*[" ".join(words[i : i + 10]) for i in range(0, len(words), 10)])
    out = vocabulary(x, 0.5, 0.4, np.random.default_rng(1), NO_RANGE)  # p = 0.2
    mapping = {
        a: b
        for before, after in zip(x, out, strict=True)
        for a, b in zip(before.split(), after.split(), strict=True)
    }
    assert len(mapping) == len(words) > 5_000
    share = np.mean([a != b for a, b in mapping.items()])
    assert share == pytest.approx(0.2, abs=0.02)  # binomial std < 0.006
    same = vocabulary(x, 0.0, 0.4, np.random.default_rng(1), NO_RANGE)
    assert same.tolist() == x.tolist()


def test_vocabulary_is_one_dialect_per_group_on_both_splits() -> None:
    x = _texts("alpha beta gamma delta epsilon zeta eta theta iota kappa")
    a = _shift("vocabulary", x, level=0.5, client_id=0, split=0)
    assert a.tolist() == _shift("vocabulary", x, level=0.5, client_id=3, split=1).tolist()
    assert a.tolist() != _shift("vocabulary", x, level=1.0, client_id=0, split=0).tolist()
    assert a.tolist() != _shift("vocabulary", x, level=0.5, seed=1).tolist()
    assert a.tolist() != x.tolist()


def test_vocabulary_text_caches_each_word_type_once() -> None:
    cache: dict[str, str | None] = {}
    vocabulary_text("Dog dog DOG cat", 1.0, 9, cache)
    assert sorted(cache) == ["cat", "dog"] and all(v is not None for v in cache.values())


@pytest.mark.parametrize("shift", [typos, vocabulary])
def test_text_shifts_check_their_inputs(shift: object) -> None:
    assert callable(shift)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="probability"):
        shift(_texts("a text"), 1.0, 1.5, rng, NO_RANGE)
    with pytest.raises(ValueError, match="probability"):
        shift(_texts("a text"), 1.0, float("nan"), rng, NO_RANGE)
    with pytest.raises(TypeError, match="example 1 is float"):
        shift(np.array(["ok", 1.5], dtype=object), 1.0, 0.5, rng, NO_RANGE)
    with pytest.raises(ValueError, match="1-D"):
        shift(np.array([["a b"]], dtype=object), 1.0, 0.5, rng, NO_RANGE)


def test_the_word_rule_skips_one_letter_words_digits_and_underscores() -> None:
    assert WORD.findall("a I x2 ab_cd déjà-vu 42") == ["ab", "cd", "déjà", "vu"]


# --- federations --------------------------------------------------------------------


def _csv(path: Path, rows: list[tuple[str, int]]) -> Path:
    path.write_text("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in rows))
    return path


def _files_spec(tmp_path: Path, **changes: object) -> PartitionSpec:
    rows = [(f"alpha beta gamma {w}", i % 2) for i, w in enumerate(_random_words(80, seed=5))]
    options = {"tasks": {"t": {"path": str(_csv(tmp_path / "t.csv", rows))}}}
    values: dict[str, object] = {
        "dataset": "files",
        "tasks": ("t",),
        "num_clients": 4,
        "partitioner": "iid",
        "dataset_options": json.dumps(options, sort_keys=True),
    }
    values.update(changes)
    return PartitionSpec(**values)  # type: ignore[arg-type]


def _assert_labels_and_level_0_kept(
    plain: tuple[ClientData, ...], shifted: tuple[ClientData, ...], levels: np.ndarray
) -> None:
    for before, after, level in zip(plain, shifted, levels, strict=True):
        np.testing.assert_array_equal(after.y_train, before.y_train)
        np.testing.assert_array_equal(after.y_test, before.y_test)
        assert after.x_train.dtype == object and after.x_train.shape == before.x_train.shape
        if level == 0.0:
            assert after.x_train.tolist() == before.x_train.tolist()
            assert after.x_test.tolist() == before.x_test.tolist()
        else:
            assert after.x_train.tolist() != before.x_train.tolist()
            assert after.x_test.tolist() != before.x_test.tolist()


def test_files_federation_in_two_dialects(tmp_path: Path) -> None:
    plain = one_task_federation(_files_spec(tmp_path))
    spec = _files_spec(
        tmp_path, input_shift="vocabulary", input_shift_strength=1.0, input_shift_groups=2
    )
    shifted = one_task_federation(spec)
    levels = client_levels(4, 2, seed=0)
    assert sorted(levels.tolist()) == [0.0, 0.0, 1.0, 1.0]
    _assert_labels_and_level_0_kept(plain, shifted, levels)
    # the level-1 group shares one dialect: "alpha beta gamma" reads the same everywhere
    openings = {
        " ".join(text.split()[:3])
        for client, level in zip(shifted, levels, strict=True)
        if level == 1.0
        for text in [*client.x_train, *client.x_test]
    }
    assert len(openings) == 1 and openings != {"alpha beta gamma"}


HAVE_REAL_FILES = (
    Path(DEFAULT_WORDNET_DIR, "data.noun").exists()
    and Path(DEFAULT_FORTUNES_DIR, "people").exists()
)
real_files = pytest.mark.skipif(
    not HAVE_REAL_FILES and not os.environ.get("CI"),
    reason="apt-get install wordnet-base fortunes",
)


@real_files
def test_wordnet_fortunes_federation_with_typos() -> None:
    options = {"wordnet-dir": DEFAULT_WORDNET_DIR, "fortunes-dir": DEFAULT_FORTUNES_DIR}
    base = PartitionSpec(
        dataset="wordnet-fortunes",
        tasks=("noun-supersense", "verb-supersense", "fortune-topic"),
        num_clients=6,
        partitioner="dirichlet",
        dataset_options=json.dumps(options, sort_keys=True),
        max_examples_per_task=300,
    )
    plain = one_task_federation(base)
    spec = replace(base, input_shift="typos", input_shift_strength=0.3)
    shifted = one_task_federation(spec)
    levels = client_levels(6, 0, seed=0)
    _assert_labels_and_level_0_kept(plain, shifted, levels)
    # the share of changed words follows each client's level (p = 0.3 * level)
    for before, after, level in zip(plain, shifted, levels, strict=True):
        changed = [
            a != b
            for t0, t1 in zip(before.x_train, after.x_train, strict=True)
            for a, b in zip(LETTER_RUN.findall(t0), LETTER_RUN.findall(t1), strict=True)
            if len(a) >= 2
        ]
        assert np.mean(changed) == pytest.approx(0.3 * level, abs=0.04)
