"""Reading runs back: ``metrics.jsonl`` (raw or typed), ``summary.json``, the newest run.

Readers are tolerant of a run killed mid-write: an unparsable *last* line of
``metrics.jsonl`` is a record cut short, skipped with a warning; any other bad
line is an error that names its line number.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fedmtl.results.files import CONFIG_FILE
from fedmtl.results.round_record import RoundRecord

logger = logging.getLogger(__name__)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Read the per-round records of a ``metrics.jsonl`` file as JSON objects.

    Parameters
    ----------
    path : pathlib.Path
        Path of the JSON-lines file.

    Returns
    -------
    list of dict
        One dictionary per non-blank line, in file order.

    Raises
    ------
    ValueError
        If a line other than the last non-blank one is not valid JSON, or if
        any line does not hold a JSON object. The message names the 1-based
        line number.
    OSError
        If the file cannot be read (e.g. it does not exist).

    Notes
    -----
    Blank lines are ignored. An unparsable *last* non-blank line is taken to
    be a record cut short by a run killed mid-write: it is skipped and a
    warning is logged.
    """
    text = Path(path).read_text(encoding="utf-8")
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    records: list[dict[str, Any]] = []
    for index, (number, line) in enumerate(lines):
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            if index == len(lines) - 1:
                logger.warning("%s: skipping truncated last line %d (%s)", path, number, err.msg)
                break
            raise ValueError(f"{path}: malformed JSON on line {number}: {err.msg}") from err
        if not isinstance(value, dict):
            raise ValueError(
                f"{path}: line {number} is not a JSON object (got {type(value).__name__})"
            )
        records.append(value)
    return records


def rounds_from_json(rows: Iterable[Mapping[str, Any]]) -> list[RoundRecord]:
    """Typed records of these JSON objects; objects without an integer ``round`` are skipped."""
    records = []
    for row in rows:
        number = row.get("round")
        if not isinstance(number, int) or isinstance(number, bool):
            logger.warning("skipping a metrics record without an integer round: %r", number)
            continue
        records.append(RoundRecord.from_json(row))
    return records


def read_rounds(path: Path) -> list[RoundRecord]:
    """Read a ``metrics.jsonl`` file as :class:`RoundRecord` objects (see :func:`read_metrics`)."""
    return rounds_from_json(read_metrics(path))


def read_summary(path: Path) -> dict[str, Any]:
    """Read a ``summary.json`` file; ``{}`` when there is none.

    Raises
    ------
    ValueError
        When the file does not hold a JSON object.
    """
    if not path.exists():
        return {}
    value = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(value, dict):
        raise ValueError(f"{path} is not a JSON object (got {type(value).__name__})")
    return value


def find_runs(root: Path) -> list[Path]:
    """The run directories directly under ``root``, oldest first (by their ``config.toml``)."""
    if not root.is_dir():
        return []
    configs = [p / CONFIG_FILE for p in root.iterdir() if (p / CONFIG_FILE).is_file()]
    return [c.parent for c in sorted(configs, key=lambda c: (c.stat().st_mtime_ns, c.parent.name))]


def latest_run(root: Path) -> Path:
    """The newest run directory under ``root`` (the one a run just made).

    Raises
    ------
    FileNotFoundError
        When ``root`` holds no run directory.
    """
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"no run directory (a folder with {CONFIG_FILE}) in {root}")
    return runs[-1]
