"""Read WordNet 3.0 ``data.noun`` / ``data.verb`` into supersense-labelled texts.

A synset's supersense is its lexicographer file (``noun.animal``, ``verb.motion``,
...). Each synset becomes one example: its words, then its gloss, e.g.
``"dog, domestic dog, Canis familiaris: a member of the genus Canis ..."``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

DEFAULT_WORDNET_DIR = "/usr/share/wordnet"

# The standard lexicographer file names, indexed by lex_filenum (WordNet's lexnames file).
LEXNAMES: tuple[str, ...] = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)

# Part of speech -> first lex file number of its supersenses (label 0) and the count.
SUPERSENSE_RANGES: dict[str, tuple[int, int]] = {"noun": (3, 26), "verb": (29, 15)}


def supersense_names(pos: str) -> tuple[str, ...]:
    """Return the supersense names of ``pos`` (``"noun"`` or ``"verb"``) in label order."""
    first, count = _range(pos)
    return LEXNAMES[first : first + count]


def parse_synset_line(line: str) -> tuple[int, str]:
    """Parse one synset line of a WordNet data file.

    Returns
    -------
    lex_filenum : int
        The synset's lexicographer file number.
    text : str
        Its words (underscores as spaces) joined by ``", "``, then ``": "`` and its gloss.

    Raises
    ------
    ValueError
        If the line does not have the WordNet data-file layout.
    """
    head, sep, gloss = line.partition("|")
    fields = head.split()
    if not sep or len(fields) < 6:
        raise ValueError("not a WordNet synset line (expected 'offset lex_filenum ... | gloss')")
    lex_filenum = int(fields[1])
    word_count = int(fields[3], 16)
    # Words and their lex_ids alternate after the hex word count.
    words = [w.replace("_", " ") for w in fields[4 : 4 + 2 * word_count : 2]]
    if len(words) != word_count:
        raise ValueError(f"synset line lists fewer than its {word_count} words")
    return lex_filenum, f"{', '.join(words)}: {gloss.strip()}"


def read_supersenses(
    wordnet_dir: str | Path, pos: str
) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.int64]]:
    """Read every synset of ``data.<pos>`` in file order with its supersense label.

    Parameters
    ----------
    wordnet_dir : str or Path
        Directory holding the WordNet 3.0 data files.
    pos : str
        ``"noun"`` (26 supersenses, labels 0..25) or ``"verb"`` (15, labels 0..14).

    Returns
    -------
    x : ndarray of object
        The synset texts (``str``).
    y : ndarray of int64
        Supersense labels.

    Raises
    ------
    FileNotFoundError
        If ``data.<pos>`` is missing.
    ValueError
        For a malformed line or a lex file outside ``pos``'s supersenses; the
        message names the file and line number.
    """
    first, count = _range(pos)
    path = Path(wordnet_dir) / f"data.{pos}"
    texts: list[str] = []
    labels: list[int] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            # The license header lines start with two spaces; blank lines carry nothing.
            if line.startswith("  ") or not line.strip():
                continue
            try:
                lex_filenum, text = parse_synset_line(line)
            except ValueError as error:
                raise ValueError(f"{path}, line {number}: {error}") from None
            label = lex_filenum - first
            if not 0 <= label < count:
                raise ValueError(
                    f"{path}, line {number}: lex file {lex_filenum} is not a {pos} supersense "
                    f"(expected {first}..{first + count - 1})"
                )
            texts.append(text)
            labels.append(label)
    x = np.empty(len(texts), dtype=object)
    x[:] = texts
    return x, np.asarray(labels, dtype=np.int64)


def _range(pos: str) -> tuple[int, int]:
    if pos not in SUPERSENSE_RANGES:
        raise ValueError(
            f"unknown part of speech {pos!r}; expected one of {list(SUPERSENSE_RANGES)}"
        )
    return SUPERSENSE_RANGES[pos]
