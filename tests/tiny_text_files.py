"""Tiny stand-ins for the Debian WordNet and fortune files (test helpers, no tests here).

``wordnet_dir(root)`` and ``fortunes_dir(root)`` write a few synsets and fortunes
in the real formats, so the ``wordnet-fortunes`` dataset loads without
``apt-get install wordnet-base fortunes``.
"""

from __future__ import annotations

from pathlib import Path

HEADER = (
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "  2 Princeton University under the following license.  By obtaining, using  \n"
    "  3   \n"
)
ELEVEN_WORDS = " ".join(f"w{i} 0" for i in range(11))
NOUN_LINES = (
    "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 ~ 00002137 n 0000 | that which is  \n",
    "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 001 @ 02083346 n 0000 "
    "| a member of the genus Canis; "
    '"the dog barked all night"  \n',
    f"15113229 28 n 0b {ELEVEN_WORDS} 000 | a span of time  \n",
)
VERB_LINES = (
    "01835496 38 v 02 travel 0 go 1 001 @ 01831531 v 0000 01 + 02 00 | change location; move  \n",
    "00002325 29 v 01 respire 1 000 01 + 02 00 | undergo the biomedical process  \n",
)
FORTUNES = {
    "people": "Alpha   one\n  spread\tout \n%\nBeta\n%\n%\n   \n%\nGamma ____\b\b\b\bthis side\n",
    "work": "Work entry one.\n%\nWork entry two.\n%\n",
    "science": "E = mc^2\n%\n",
}


def wordnet_dir(root: Path) -> Path:
    """Write ``data.noun`` and ``data.verb`` (a few synsets) under ``root``; return it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.noun").write_text(HEADER + "".join(NOUN_LINES))
    (root / "data.verb").write_text(HEADER + "".join(VERB_LINES))
    return root


def fortunes_dir(root: Path) -> Path:
    """Write the ``FORTUNES`` categories (with strfile indexes) under ``root``; return it."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in FORTUNES.items():
        (root / name).write_text(content)
        (root / f"{name}.dat").write_bytes(b"\x00\x00\x00\x02")  # strfile's index
        (root / f"{name}.u8").symlink_to(name)
    return root
