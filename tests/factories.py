"""Builders for fake Flower messages and a fake Grid (no Ray, no SuperLink).

They live in :mod:`strategies.testing.fakes` so strategy authors can use them;
this module re-exports them for the existing tests.
"""

from strategies.testing.fakes import (
    SERVER_NODE,
    FakeGrid,
    error_reply,
    evaluate_reply,
    query_reply_content,
    reply,
    reply_metadata,
    train_reply,
)

__all__ = [
    "SERVER_NODE",
    "FakeGrid",
    "error_reply",
    "evaluate_reply",
    "query_reply_content",
    "reply",
    "reply_metadata",
    "train_reply",
]
