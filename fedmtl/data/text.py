"""Built-in offline text dataset ``wordnet-fortunes``: three tasks with their own texts.

``noun-supersense`` and ``verb-supersense`` classify WordNet 3.0 synsets (words and
gloss) into their lexicographer files; ``fortune-topic`` classifies BSD fortunes by
category. The tasks share no inputs, only the language, which is the setting where a
shared text backbone pays off. The files come from Debian's ``wordnet-base`` and
``fortunes`` packages and are read on first use, not when the spec is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from fedmtl.data.fortunes import (
    DEFAULT_CATEGORIES,
    DEFAULT_FORTUNES_DIR,
    available_categories,
    read_fortunes,
)
from fedmtl.data.registry import (
    DATASETS,
    BaseData,
    DatasetEntry,
    DatasetOptionError,
    DatasetSpec,
    TaskSpec,
    identity_labels,
)
from fedmtl.data.wordnet import DEFAULT_WORDNET_DIR, read_supersenses, supersense_names

NAME = "wordnet-fortunes"
OPTIONS = ("wordnet-dir", "fortunes-dir", "fortune-categories")
_INSTALL_HINT = "install the files with `apt-get install wordnet-base fortunes`"


def build_text_dataset(options: Mapping[str, Any]) -> DatasetSpec:
    """Return the ``wordnet-fortunes`` spec for ``dataset-options`` (reads no data files).

    Raises
    ------
    DatasetOptionError
        For a non-string directory, or a bad or unknown ``fortune-categories`` entry
        (checked against the fortunes directory when it exists).
    """
    wordnet_dir = _dir_option(options, "wordnet-dir", DEFAULT_WORDNET_DIR)
    fortunes_dir = _dir_option(options, "fortunes-dir", DEFAULT_FORTUNES_DIR)
    categories = _categories_option(options, fortunes_dir)
    nouns, verbs = supersense_names("noun"), supersense_names("verb")
    tasks = {
        "noun-supersense": TaskSpec(
            "noun-supersense",
            len(nouns),
            identity_labels,
            description="WordNet noun synset (words: gloss) -> its supersense, 26 classes",
            labels=nouns,
        ),
        "verb-supersense": TaskSpec(
            "verb-supersense",
            len(verbs),
            identity_labels,
            description="WordNet verb synset (words: gloss) -> its supersense, 15 classes",
            labels=verbs,
        ),
        "fortune-topic": TaskSpec(
            "fortune-topic",
            len(categories),
            identity_labels,
            description=f"fortune cookie text -> its category, {len(categories)} classes",
            labels=categories,
        ),
    }

    @lru_cache(maxsize=len(tasks))
    def task_data(task: str) -> BaseData:
        if task == "fortune-topic":
            _require(fortunes_dir, "fortunes-dir")
            for category in categories:
                _require(fortunes_dir / category, "fortunes-dir")
            x, y = read_fortunes(fortunes_dir, categories)
        elif task in ("noun-supersense", "verb-supersense"):
            pos = task.split("-")[0]
            _require(wordnet_dir / f"data.{pos}", "wordnet-dir")
            x, y = read_supersenses(wordnet_dir, pos)
        else:
            raise KeyError(f"dataset '{NAME}' has no task '{task}'")
        return BaseData(x=x, y=y)

    return DatasetSpec(
        name=NAME,
        tasks=tasks,
        task_data=task_data,
        input_kind="text",
        # No pretraining split: a text backbone is pretrained on other text, if at all.
        source_fraction=0.0,
    )


def _dir_option(options: Mapping[str, Any], key: str, default: str) -> Path:
    value = options.get(key, default)
    if not isinstance(value, str) or not value:
        raise DatasetOptionError(f"dataset option {key!r} must be a directory path, got {value!r}")
    return Path(value).expanduser()


def _categories_option(options: Mapping[str, Any], fortunes_dir: Path) -> tuple[str, ...]:
    value = options.get("fortune-categories", list(DEFAULT_CATEGORIES))
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(item, str) and item for item in value)
    ):
        raise DatasetOptionError(
            f"dataset option 'fortune-categories' must be a non-empty list of names, got {value!r}"
        )
    duplicates = sorted({name for name in value if value.count(name) > 1})
    if duplicates:
        raise DatasetOptionError(f"'fortune-categories' lists {duplicates} more than once")
    # Without the directory the check waits for the read, which then names the fix.
    if fortunes_dir.is_dir():
        available = available_categories(fortunes_dir)
        unknown = [name for name in value if name not in available]
        if unknown:
            raise DatasetOptionError(
                f"unknown fortune category {unknown[0]!r} in {fortunes_dir}; "
                f"available: {', '.join(available)}"
            )
    return tuple(value)


def _require(path: Path, option: str) -> None:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: {_INSTALL_HINT}, or point the dataset at your copy with "
            f'dataset-options = {{{option} = "..."}}'
        )


DATASETS.add(
    NAME,
    DatasetEntry(
        build=build_text_dataset,
        options=OPTIONS,
        description=(
            "WordNet noun/verb supersenses and fortune topics, each task its own texts "
            "(offline; apt-get install wordnet-base fortunes)"
        ),
    ),
)
