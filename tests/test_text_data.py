"""Tests for the ``wordnet-fortunes`` text dataset and its WordNet and fortune readers."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fedmtl.data import get_dataset_spec
from fedmtl.data.federation import ClientData, PartitionSpec
from fedmtl.data.fortunes import (
    DEFAULT_CATEGORIES,
    DEFAULT_FORTUNES_DIR,
    available_categories,
    clean_entry,
    read_fortune_file,
    read_fortunes,
)
from fedmtl.data.registry import DatasetOptionError
from fedmtl.data.wordnet import (
    DEFAULT_WORDNET_DIR,
    parse_synset_line,
    read_supersenses,
    supersense_names,
)
from tests.federation_helpers import one_task_federation
from tests.tiny_text_files import (
    FORTUNES,
    HEADER,
    NOUN_LINES,
    VERB_LINES,
    fortunes_dir,
    wordnet_dir,
)

TEXT_TASKS = ("noun-supersense", "verb-supersense", "fortune-topic")


def _options(tmp_path: Path, **extra: object) -> dict[str, object]:
    options: dict[str, object] = {
        "wordnet-dir": str(wordnet_dir(tmp_path / "wordnet")),
        "fortunes-dir": str(fortunes_dir(tmp_path / "fortunes")),
        "fortune-categories": ["work", "people"],
    }
    options.update(extra)
    return options


# --- WordNet -------------------------------------------------------------------------


def test_parse_synset_line_joins_words_and_strips_gloss() -> None:
    lex, text = parse_synset_line(NOUN_LINES[1])

    assert lex == 5
    assert text == (
        "dog, domestic dog, Canis familiaris: "
        'a member of the genus Canis; "the dog barked all night"'
    )


def test_parse_synset_line_reads_the_word_count_as_hex() -> None:
    # "0b" words: decimal parsing would fail, and a count of 0 would drop them all
    lex, text = parse_synset_line(NOUN_LINES[2])

    assert lex == 28
    assert text == ", ".join(f"w{i}" for i in range(11)) + ": a span of time"


def test_read_supersenses_skips_header_and_labels_in_file_order(tmp_path: Path) -> None:
    wordnet = wordnet_dir(tmp_path)

    nouns, noun_labels = read_supersenses(wordnet, "noun")
    verbs, verb_labels = read_supersenses(wordnet, "verb")

    assert nouns.dtype == object and noun_labels.dtype == np.int64
    assert [t.split(":")[0] for t in nouns] == [
        "entity",
        "dog, domestic dog, Canis familiaris",
        (", ".join(f"w{i}" for i in range(11))),
    ]
    # noun.Tops (lex file 3) is label 0, noun.animal (5) label 2, noun.time (28) label 25
    assert noun_labels.tolist() == [0, 2, 25]
    # verb.motion (38) is label 9, verb.body (29) label 0
    assert verbs.tolist() == [
        "travel, go: change location; move",
        "respire: undergo the biomedical process",
    ]
    assert verb_labels.tolist() == [9, 0]


def test_supersense_names_are_the_lexnames_in_label_order() -> None:
    nouns, verbs = supersense_names("noun"), supersense_names("verb")

    assert len(nouns) == 26 and len(verbs) == 15
    assert (nouns[0], nouns[2], nouns[-1]) == ("noun.Tops", "noun.animal", "noun.time")
    assert (verbs[0], verbs[9], verbs[-1]) == ("verb.body", "verb.motion", "verb.weather")


def test_read_supersenses_rejects_a_lex_file_of_another_part_of_speech(tmp_path: Path) -> None:
    wordnet = wordnet_dir(tmp_path)
    (wordnet / "data.verb").write_text(HEADER + VERB_LINES[0] + NOUN_LINES[0])

    with pytest.raises(ValueError, match=r"data\.verb, line 5: lex file 3 is not a verb"):
        read_supersenses(wordnet, "verb")


def test_read_supersenses_names_file_and_line_of_a_malformed_line(tmp_path: Path) -> None:
    wordnet = wordnet_dir(tmp_path)
    (wordnet / "data.noun").write_text(HEADER + NOUN_LINES[0] + "garbage without a gloss\n")

    with pytest.raises(ValueError, match=r"data\.noun, line 5: not a WordNet synset line"):
        read_supersenses(wordnet, "noun")


# --- fortunes ------------------------------------------------------------------------


def test_read_fortune_file_splits_cleans_and_drops_empty_entries(tmp_path: Path) -> None:
    path = tmp_path / "people"
    path.write_text(FORTUNES["people"])

    entries = read_fortune_file(path)

    # the underline overstrike resolves to the visible word; the last entry has no "%"
    assert entries == ["Alpha one spread out", "Beta", "Gamma this side"]


def test_only_a_line_that_is_exactly_percent_separates_entries(tmp_path: Path) -> None:
    path = tmp_path / "misc"
    path.write_text("100%\n %\n%%\nsame entry\n%\nnext\n")

    assert read_fortune_file(path) == ["100% % %% same entry", "next"]


def test_clean_entry_resolves_overstrike_and_a_leading_backspace() -> None:
    assert clean_entry("a\bb c\n") == "b c"
    assert clean_entry("\bx  y") == "x y"


def test_available_categories_leave_out_indexes_and_links(tmp_path: Path) -> None:
    fortunes = fortunes_dir(tmp_path)

    assert available_categories(fortunes) == ["people", "science", "work"]


def test_read_fortunes_labels_by_position_in_the_given_list(tmp_path: Path) -> None:
    fortunes = fortunes_dir(tmp_path)

    x, y = read_fortunes(fortunes, ["work", "science", "people"])

    assert x.tolist() == [
        "Work entry one.",
        "Work entry two.",
        "E = mc^2",
        "Alpha one spread out",
        "Beta",
        "Gamma this side",
    ]
    assert y.tolist() == [0, 0, 1, 2, 2, 2]


# --- the dataset ---------------------------------------------------------------------


def test_dataset_spec_has_three_text_tasks_with_their_own_data(tmp_path: Path) -> None:
    spec = get_dataset_spec("wordnet-fortunes", _options(tmp_path))

    assert spec.input_kind == "text" and spec.source_fraction == 0.0
    assert not spec.shared_inputs
    assert {name: t.num_outputs for name, t in spec.tasks.items()} == {
        "noun-supersense": 26,
        "verb-supersense": 15,
        "fortune-topic": 2,
    }
    assert spec.tasks["fortune-topic"].labels == ("work", "people")
    assert spec.tasks["verb-supersense"].labels[9] == "verb.motion"
    assert spec.task_data is not None
    fortunes = spec.task_data("fortune-topic")
    assert fortunes.x.dtype == object and all(isinstance(t, str) for t in fortunes.x)
    assert fortunes.y.tolist() == [0, 0, 1, 1, 1]
    assert spec.task_data("verb-supersense").y.tolist() == [9, 0]
    assert spec.tasks["noun-supersense"].label_fn(np.array([3])).tolist() == [3]


def test_task_data_is_read_once_per_task(tmp_path: Path) -> None:
    spec = get_dataset_spec("wordnet-fortunes", _options(tmp_path))
    assert spec.task_data is not None

    assert spec.task_data("noun-supersense") is spec.task_data("noun-supersense")


def test_unknown_fortune_category_lists_the_available_ones(tmp_path: Path) -> None:
    options = _options(tmp_path, **{"fortune-categories": ["work", "poetry"]})

    with pytest.raises(DatasetOptionError, match=r"'poetry'.*available: people, science, work"):
        get_dataset_spec("wordnet-fortunes", options)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("fortune-categories", [], "must be a non-empty list"),
        ("fortune-categories", "work", "must be a non-empty list"),
        ("fortune-categories", ["work", "work"], r"lists \['work'\] more than once"),
        ("wordnet-dir", 3, "'wordnet-dir' must be a directory path"),
        ("fortunes-dir", "", "'fortunes-dir' must be a directory path"),
    ],
)
def test_bad_option_values_are_refused(
    tmp_path: Path, key: str, value: object, message: str
) -> None:
    with pytest.raises(DatasetOptionError, match=message):
        get_dataset_spec("wordnet-fortunes", _options(tmp_path, **{key: value}))


def test_unknown_option_is_refused() -> None:
    with pytest.raises(DatasetOptionError, match="no option 'wordnet'"):
        get_dataset_spec("wordnet-fortunes", {"wordnet": "/tmp"})


def test_missing_files_fail_on_read_with_the_fix(tmp_path: Path) -> None:
    # Execute: building needs no files (a server may never read them)
    options = {"wordnet-dir": str(tmp_path / "nowhere"), "fortunes-dir": str(tmp_path / "none")}
    spec = get_dataset_spec("wordnet-fortunes", options)
    assert spec.task_data is not None
    assert spec.tasks["fortune-topic"].num_outputs == len(DEFAULT_CATEGORIES)

    # Assert: each read names the missing path, the packages and the option
    for task, option in [("verb-supersense", "wordnet-dir"), ("fortune-topic", "fortunes-dir")]:
        with pytest.raises(FileNotFoundError) as raised:
            spec.task_data(task)
        message = str(raised.value)
        assert str(tmp_path) in message
        assert "apt-get install wordnet-base fortunes" in message
        assert f'dataset-options = {{{option} = "..."}}' in message


def test_missing_category_file_fails_on_read(tmp_path: Path) -> None:
    options = _options(tmp_path)
    spec = get_dataset_spec("wordnet-fortunes", options)
    assert spec.task_data is not None
    (tmp_path / "fortunes" / "work").unlink()

    with pytest.raises(FileNotFoundError, match=r"fortunes/work not found"):
        spec.task_data("fortune-topic")


# --- the real Debian files (wordnet-base, fortunes) ----------------------------------

HAVE_REAL_FILES = (
    Path(DEFAULT_WORDNET_DIR, "data.noun").exists()
    and Path(DEFAULT_FORTUNES_DIR, "people").exists()
)
# CI installs the packages, so a missing file there is a failure, not a skip.
real_files = pytest.mark.skipif(
    not HAVE_REAL_FILES and not os.environ.get("CI"),
    reason="apt-get install wordnet-base fortunes",
)


@real_files
def test_real_wordnet_has_all_synsets_and_supersenses() -> None:
    spec = get_dataset_spec("wordnet-fortunes")
    assert spec.task_data is not None

    nouns = spec.task_data("noun-supersense")
    verbs = spec.task_data("verb-supersense")

    assert len(nouns.y) == 82_115 and len(verbs.y) == 13_767
    assert sorted(set(nouns.y.tolist())) == list(range(26))
    assert sorted(set(verbs.y.tolist())) == list(range(15))
    assert nouns.x[0].startswith("entity: that which is perceived")
    assert all(isinstance(t, str) and ": " in t for t in verbs.x)


@real_files
def test_real_fortunes_have_ten_topics() -> None:
    spec = get_dataset_spec("wordnet-fortunes")
    assert spec.task_data is not None

    data = spec.task_data("fortune-topic")

    assert spec.tasks["fortune-topic"].num_outputs == 10
    assert sorted(set(data.y.tolist())) == list(range(10))
    assert len(data.y) > 8_000
    assert all(t and "\n" not in t and "\b" not in t for t in data.x)


def _federation_spec(seed: int = 0) -> PartitionSpec:
    options = {"wordnet-dir": DEFAULT_WORDNET_DIR, "fortunes-dir": DEFAULT_FORTUNES_DIR}
    return PartitionSpec(
        dataset="wordnet-fortunes",
        tasks=TEXT_TASKS,
        num_clients=6,
        partitioner="dirichlet",
        dataset_options=json.dumps(options, sort_keys=True),
        max_examples_per_task=300,
        seed=seed,
    )


@pytest.fixture(scope="module")
def federation() -> tuple[ClientData, ...]:
    return one_task_federation(_federation_spec())


@real_files
def test_federation_draws_each_client_from_its_own_task_pool(
    federation: tuple[ClientData, ...],
) -> None:
    spec = _federation_spec().dataset_spec()
    assert spec.task_data is not None
    for task in TEXT_TASKS:
        pool = spec.task_data(task)
        available = Counter(zip(pool.x.tolist(), pool.y.tolist(), strict=True))
        clients = [c for c in federation if c.task == task]
        assert [c.client_id % 3 for c in clients] == [TEXT_TASKS.index(task)] * 2
        used: Counter[tuple[str, int]] = Counter()
        for client in clients:
            assert client.x_train.dtype == object
            assert np.all((client.y_train >= 0) & (client.y_train < spec.tasks[task].num_outputs))
            used.update(zip(client.x_train.tolist(), client.y_train.tolist(), strict=True))
            used.update(zip(client.x_test.tolist(), client.y_test.tolist(), strict=True))
        # Every (text, label) comes from this task's pool, and no example is used twice:
        # train and test, and the task's two clients, are disjoint.
        assert not used - available
        assert sum(used.values()) == 300


@real_files
def test_same_spec_gives_identical_text_federation(federation: tuple[ClientData, ...]) -> None:
    again = one_task_federation(_federation_spec(), cached=False)

    for a, b in zip(federation, again, strict=True):
        assert a.task == b.task
        for field in ("x_train", "y_train", "x_test", "y_test"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
