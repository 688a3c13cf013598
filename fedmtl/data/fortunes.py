"""Read BSD ``fortune`` files into topic-labelled texts (label = the file's category)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

DEFAULT_FORTUNES_DIR = "/usr/share/games/fortunes"

# The ten largest text categories of Debian's ``fortunes`` package, by entry count.
DEFAULT_CATEGORIES: tuple[str, ...] = (
    "people",
    "definitions",
    "cookie",
    "computers",
    "songs-poems",
    "politics",
    "miscellaneous",
    "work",
    "science",
    "men-women",
)

# strfile's index (.dat) and the UTF-8 links (.u8) sit beside each category file.
_NOT_CATEGORIES = (".dat", ".u8")
_OVERSTRIKE = re.compile(r"[^\x08]\x08")


def available_categories(fortunes_dir: str | Path) -> list[str]:
    """Return the sorted category names (plain files, not indexes) in ``fortunes_dir``."""
    return sorted(
        path.name
        for path in Path(fortunes_dir).iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix not in _NOT_CATEGORIES
    )


def clean_entry(entry: str) -> str:
    """Return ``entry`` as one line: overstrikes resolved, whitespace runs as single spaces."""
    # Some entries underline words for terminals ("____\b\b\b\bthis"); keep the visible text.
    while "\x08" in entry:
        resolved = _OVERSTRIKE.sub("", entry)
        if resolved == entry:  # a backspace at the very start overwrites nothing
            resolved = entry.replace("\x08", "")
        entry = resolved
    return " ".join(entry.split())


def read_fortune_file(path: str | Path) -> list[str]:
    """Return the non-empty, cleaned entries of one fortune file (entries end at a ``%`` line)."""
    entries: list[str] = []
    current: list[str] = []
    with Path(path).open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.rstrip("\r\n") == "%":
                entries.append(clean_entry("".join(current)))
                current = []
            else:
                current.append(line)
    entries.append(clean_entry("".join(current)))  # the last entry need not end with "%"
    return [entry for entry in entries if entry]


def read_fortunes(
    fortunes_dir: str | Path, categories: Sequence[str] = DEFAULT_CATEGORIES
) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.int64]]:
    """Read the entries of ``categories``; an entry's label is its category's index.

    Raises
    ------
    FileNotFoundError
        If a category's file is missing.
    """
    texts: list[str] = []
    labels: list[int] = []
    for label, category in enumerate(categories):
        entries = read_fortune_file(Path(fortunes_dir) / category)
        texts.extend(entries)
        labels.extend([label] * len(entries))
    x = np.empty(len(texts), dtype=object)
    x[:] = texts
    return x, np.asarray(labels, dtype=np.int64)
