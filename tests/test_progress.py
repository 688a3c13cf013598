"""Progress inside a round: ProgressGrid runs Flower's own loop, and talks only to a terminal.

The reference is Flower's code itself: the same scripted grid is driven once
through Flower's ``send_and_receive`` (``InMemoryGrid``'s, ``HttpGrid``'s) and
once through :class:`ProgressGrid`, on a fake clock; replies, their order, the
pulls and the sleeps must be the same.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from flwr.superlink.grid import HttpGrid, InMemoryGrid

from fedmtl.progress import (
    HTTP_GRID_PULL_INTERVAL,
    ProgressGrid,
    flower_pull_interval,
    with_progress,
)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """``time.time``/``monotonic`` that only ``time.sleep`` moves."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(time, "time", fake.time)
    monkeypatch.setattr(time, "monotonic", fake.time)
    monkeypatch.setattr(time, "sleep", fake.sleep)
    return fake


def _message(message_type: str = "train", reply_to: str = "") -> Any:
    return SimpleNamespace(
        metadata=SimpleNamespace(message_type=message_type, reply_to_message_id=reply_to)
    )


class Scripted:
    """push gives ids m0..; each pull answers the next batch of the script (what is asked)."""

    def __init__(self, script: Sequence[Sequence[int]], pull_interval: float = 0.1) -> None:
        self.script = [list(batch) for batch in script]
        self.pull_interval = pull_interval
        self.pulls: list[list[str]] = []
        self.replies: dict[str, Any] = {}

    def push_messages(self, messages: Iterable[Any]) -> list[str]:
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Any]:
        asked = set(message_ids)
        self.pulls.append(sorted(asked))
        batch = self.script.pop(0) if self.script else []
        out = []
        for i in batch:
            key = f"m{i}"
            if key in asked:  # a reply is delivered once
                out.append(self.replies.setdefault(key, _message("train", key)))
        return out

    def get_node_ids(self) -> list[int]:
        return [7, 8]


class MemoryScripted(Scripted, InMemoryGrid):
    """An InMemoryGrid (Flower's loop) over the script."""


class HttpScripted(Scripted, HttpGrid):
    """An HttpGrid (Flower's loop, 3 s polls) over the script."""


SCRIPTS = {
    "all arrive, out of order, over polls": ([[3], [], [0, 4], [2, 1]], None),
    "deadline passes with two missing": ([[1], [], [4], [], [], [], [], []], 0.35),
    "zero timeout pulls nothing": ([[0, 1, 2, 3, 4]], 0.0),
    "everything in the first pull": ([[4, 3, 2, 1, 0]], 5.0),
}


@pytest.mark.parametrize("grid_class", [MemoryScripted, HttpScripted])
@pytest.mark.parametrize("case", sorted(SCRIPTS))
def test_replies_order_and_timeout_are_flowers(
    clock: Clock, grid_class: type[Scripted], case: str
) -> None:
    # Prepare
    script, timeout = SCRIPTS[case]
    if grid_class is HttpScripted and timeout is not None:
        timeout *= 30  # the same number of polls at 3 s
    messages = [_message() for _ in range(5)]
    reference, mine = grid_class(script), grid_class(script)
    interval = flower_pull_interval(mine)  # type: ignore[arg-type]
    assert interval == (HTTP_GRID_PULL_INTERVAL if grid_class is HttpScripted else 0.1)
    # Execute
    start = clock.now
    expected = list(type(mine).send_and_receive(reference, messages, timeout=timeout))  # type: ignore[arg-type]
    flower_sleeps, flower_s = list(clock.sleeps), clock.now - start
    clock.sleeps.clear()
    start = clock.now
    wrapped = ProgressGrid(mine, Tty(), interval, show_after=0.0)  # type: ignore[arg-type]
    got = list(wrapped.send_and_receive(messages, timeout=timeout))
    # Assert: the same replies in the same order, the same pulls and sleeps
    assert [m.metadata.reply_to_message_id for m in got] == [
        m.metadata.reply_to_message_id for m in expected
    ]
    assert mine.pulls == reference.pulls
    assert clock.sleeps == flower_sleeps
    assert clock.now - start == flower_s
    if case == "deadline passes with two missing":
        assert sorted(m.metadata.reply_to_message_id for m in got) == ["m1", "m4"]
    if case == "zero timeout pulls nothing":
        assert got == [] and mine.pulls == []


def test_the_line_shows_replies_of_sent_and_seconds_then_is_erased(clock: Clock) -> None:
    # Prepare
    out = Tty()
    grid = ProgressGrid(MemoryScripted([[0], [], [1, 2]]), out, 0.5, show_after=0.0)  # type: ignore[arg-type]
    # Execute
    replies = list(grid.send_and_receive([_message("evaluate") for _ in range(3)]))
    # Assert
    assert len(replies) == 3
    text = out.getvalue()
    shown = [part for part in text.split("\r") if part.strip()]
    assert shown == [
        "  evaluate: 1/3 replies  0.0 s",
        "  evaluate: 1/3 replies  0.5 s",
        "  evaluate: 3/3 replies  1.0 s",
    ]
    assert text.endswith("\r" + " " * len(shown[-1]) + "\r")  # erased: the round line follows


def test_a_quick_exchange_writes_nothing(clock: Clock) -> None:
    out = Tty()
    grid = ProgressGrid(MemoryScripted([[0], [1]]), out, 0.1)  # type: ignore[arg-type]
    assert len(list(grid.send_and_receive([_message(), _message()]))) == 2
    assert out.getvalue() == ""


def test_only_a_terminal_and_flowers_own_loop_get_the_wrapper() -> None:
    grid = MemoryScripted([])
    assert with_progress(grid, io.StringIO()) is grid  # type: ignore[arg-type]
    wrapped = with_progress(grid, Tty())  # type: ignore[arg-type]
    assert isinstance(wrapped, ProgressGrid)
    assert with_progress(wrapped, Tty()) is wrapped  # not twice

    class OwnLoop(MemoryScripted):
        def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> Any:
            return []

    other, plain = OwnLoop([]), SimpleNamespace()
    assert with_progress(other, Tty()) is other  # type: ignore[arg-type]
    assert with_progress(plain, Tty()) is plain  # type: ignore[arg-type]


def test_everything_else_is_the_wrapped_grids(clock: Clock) -> None:
    inner = MemoryScripted([])
    grid = ProgressGrid(inner, Tty(), 0.1)  # type: ignore[arg-type]
    assert list(grid.get_node_ids()) == [7, 8]
    assert grid.push_messages([_message()]) == ["m0"]
    assert grid.pull_interval == 0.1  # any other attribute
    assert grid.pulls is inner.pulls


def test_an_unchanged_line_is_not_rewritten(clock: Clock) -> None:
    out = Tty()
    grid = ProgressGrid(MemoryScripted([[], [], [0]]), out, 0.01, show_after=0.0)  # type: ignore[arg-type]
    assert len(list(grid.send_and_receive([_message()]))) == 1
    shown = [part for part in out.getvalue().split("\r") if part.strip()]
    assert shown == ["  train: 0/1 replies  0.0 s", "  train: 1/1 replies  0.0 s"]
