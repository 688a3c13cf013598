"""Test helpers over :func:`fedmtl.data.build_federation` for runs of one-task clients."""

from __future__ import annotations

from fedmtl.data import ClientData, build_federation
from fedmtl.data.partition_spec import PartitionSpec


def one_task_federation(spec: PartitionSpec, cached: bool = True) -> tuple[ClientData, ...]:
    """Every client's one ClientData (asserting each holds one task); ``cached=False`` rebuilds."""
    build = build_federation if cached else build_federation.__wrapped__
    federation: tuple[tuple[ClientData, ...], ...] = build(spec)
    assert all(len(parts) == 1 for parts in federation), "a client holds several tasks"
    return tuple(part for (part,) in federation)
