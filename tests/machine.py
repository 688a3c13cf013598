"""A pretend machine for the Ray backend settings tests: its CPU and GPU counts."""

from __future__ import annotations

import pytest

from fedmtl import simulation


def fake_machine(monkeypatch: pytest.MonkeyPatch, cpus: int, gpus: int) -> None:
    """Make fedmtl see ``cpus`` CPU cores and ``gpus`` visible GPUs on this machine."""
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    monkeypatch.setattr(simulation, "visible_gpus", lambda: gpus)
