"""Progress inside a round: replies received of sent, and seconds elapsed, on a terminal.

:func:`with_progress` wraps the ServerApp's Grid in a :class:`ProgressGrid`
when the output stream is a terminal (and leaves it alone otherwise: piped,
redirected, under ``flwr run`` or pytest, nothing changes). The wrapper's
``send_and_receive`` is Flower's own loop, call for call (Flower 1.41's
``InMemoryGrid`` and ``HttpGrid``: push, then pull the outstanding message ids,
drop the answered ones, stop when none is left or the deadline passed, sleep
the grid's poll interval), with one line of progress written after each pull
and erased at the end. Replies come back in exactly Flower's order, with
Flower's timeout semantics; every other call goes to the wrapped grid. Only
those two Flower grids are wrapped: a grid whose loop is not Flower's (a
subclass overriding it, a test grid) is returned as it is.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

#: Flower's ``HttpGrid`` polls every 3 s (hard-coded in its ``send_and_receive``).
HTTP_GRID_PULL_INTERVAL = 3.0


def flower_pull_interval(grid: Grid) -> float | None:
    """The poll interval of Flower's own ``send_and_receive`` loop on ``grid``.

    ``None`` when ``grid`` does not run that loop (not an ``InMemoryGrid`` or
    ``HttpGrid``, or a subclass that overrides ``send_and_receive``).
    """
    from flwr.superlink.grid import HttpGrid, InMemoryGrid

    method = getattr(type(grid), "send_and_receive", None)
    if method is InMemoryGrid.send_and_receive:
        return float(grid.pull_interval)  # type: ignore[attr-defined]
    if method is HttpGrid.send_and_receive:
        return HTTP_GRID_PULL_INTERVAL
    return None


def with_progress(grid: Grid, out: TextIO | None = None) -> Grid:
    """``grid`` wrapped in a :class:`ProgressGrid` writing to ``out`` if it is a terminal.

    ``out`` defaults to ``sys.stderr``. Anything else (not a terminal, or a grid
    whose loop is not Flower's) returns ``grid`` itself.
    """
    stream = sys.stderr if out is None else out
    if not _is_terminal(stream) or isinstance(grid, ProgressGrid):
        return grid
    interval = flower_pull_interval(grid)
    if interval is None:
        return grid
    return ProgressGrid(grid, stream, interval)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class ProgressGrid(Grid):
    """A Grid showing ``<phase>: <received>/<sent> replies  <s> s`` while it waits.

    Parameters
    ----------
    grid : Grid
        The wrapped grid: every call goes there; ``send_and_receive`` runs
        Flower's loop over its ``push_messages`` and ``pull_messages``.
    out : text stream
        Where the line goes (rewritten in place with a carriage return).
    pull_interval : float
        Seconds between pulls: the wrapped grid's own (:func:`flower_pull_interval`).
    show_after : float
        Seconds of waiting before the line appears (quick exchanges stay silent).
    """

    def __init__(
        self, grid: Grid, out: TextIO, pull_interval: float, show_after: float = 1.0
    ) -> None:
        self._grid, self._out = grid, out
        self._interval, self._show_after = pull_interval, show_after
        self._width, self._last = 0, ""

    # --- Flower's loop, with the progress line -------------------------------------------
    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages``, pull replies until all came or ``timeout`` passed (Flower's loop)."""
        messages = list(messages)
        phase = messages[0].metadata.message_type if messages else ""
        started = time.monotonic()
        # From here on: flwr/superlink/grid/inmemory_grid.py (1.41), statement for statement.
        msg_ids = set(self._grid.push_messages(messages))
        del messages
        sent = len(msg_ids)
        end_time = time.time() + (timeout if timeout is not None else 0.0)
        ret: list[Message] = []
        try:
            while timeout is None or time.time() < end_time:
                res_msgs = self._grid.pull_messages(msg_ids)
                ret.extend(res_msgs)
                msg_ids.difference_update({msg.metadata.reply_to_message_id for msg in res_msgs})
                self._show(phase, sent - len(msg_ids), sent, time.monotonic() - started)
                if len(msg_ids) == 0:
                    break
                time.sleep(self._interval)
        finally:
            self._erase()
        return ret

    def _show(self, phase: str, received: int, sent: int, elapsed: float) -> None:
        if elapsed < self._show_after:
            return
        text = f"  {phase}: {received}/{sent} replies  {elapsed:.1f} s"
        if text == self._last:
            return
        self._last = text
        pad = " " * max(self._width - len(text), 0)
        self._out.write("\r" + text + pad)
        self._out.flush()
        self._width = len(text)

    def _erase(self) -> None:
        if self._width:
            self._out.write("\r" + " " * self._width + "\r")
            self._out.flush()
            self._width, self._last = 0, ""

    # --- everything else is the wrapped grid's ---------------------------------------------
    def set_run(self, run: Any) -> None:
        """The wrapped grid's."""
        self._grid.set_run(run)

    @property
    def run(self) -> Any:
        """The wrapped grid's."""
        return self._grid.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """The wrapped grid's."""
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        """The wrapped grid's."""
        return self._grid.get_node_ids()

    def get_nodes(self) -> Any:
        """The wrapped grid's."""
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """The wrapped grid's."""
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The wrapped grid's."""
        return self._grid.pull_messages(message_ids)

    def __getattr__(self, name: str) -> Any:
        if name == "_grid":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self._grid, name)
