"""Plug-in strategies that fail on purpose, named as ``tests.failing_strategies:<Class>``.

A run with one of them trains nothing: every round is skipped, and the run fails.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg

BOOM = "aggregation exploded on purpose"


class RaisingFedAvg(FedAvg):
    """FedAvg whose ``aggregate_train`` raises in every round."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        raise RuntimeError(BOOM)


class NanFedAvg(FedAvg):
    """FedAvg whose aggregate is NaN everywhere (right keys and shapes, unusable values)."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return None, metrics
        poisoned = {
            key: Array(np.full_like(array.numpy(), np.nan)) for key, array in arrays.items()
        }
        return ArrayRecord(poisoned), metrics
