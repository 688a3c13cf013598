"""A user-written strategy (`--set strategy=tests.example_plugin:HalfStepFedAvg`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedmtl.records import from_record, to_record


class HalfStepFedAvg(FedAvg):
    """FedAvg with a server step of 0.5: move halfway from the global model to the average."""

    def __init__(self, step: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step = step
        self.current: ArrayRecord | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.current = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        averaged, metrics = super().aggregate_train(server_round, replies)
        if averaged is None or self.current is None:
            return averaged, metrics
        old, new = from_record(self.current), from_record(averaged)
        return to_record({k: old[k] + self.step * (new[k] - old[k]) for k in new}), metrics
