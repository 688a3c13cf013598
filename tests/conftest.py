"""Shared fixtures for the fast unit tests."""

from __future__ import annotations

import pytest
from flwr.supercore.task_identity import TaskIdentity

from tests.factories import SERVER_NODE


@pytest.fixture
def server_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend to run inside a ServerApp, so ``Message(...)`` can fill its metadata.

    Flower 1.41 reads the run id, node id and task id of new instruction messages
    from process-wide ``TaskIdentity``; the runtimes set it, unit tests must too.
    """
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", SERVER_NODE)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.fixture
def no_ray_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run outside any Ray cluster a developer's shell points at (``RAY_ADDRESS`` unset)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
