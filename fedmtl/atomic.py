"""Atomic file replacement: a crash mid-write never leaves a half-written file behind.

The content goes to a temporary file in the target's directory, is flushed to
disk, then renamed over the target (``os.replace`` is atomic on POSIX and
Windows); on any error the temporary file is removed and the old target stays.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(target: Path) -> Iterator[BinaryIO]:
    """Open a binary file that replaces ``target`` only when the block succeeds."""
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(target: Path, text: str) -> None:
    """Replace ``target`` with ``text`` (UTF-8) atomically."""
    with atomic_file(target) as fh:
        fh.write(text.encode())
