"""Local-only training: the lower reference of every federated comparison.

Nothing leaves a client and nothing is aggregated; each client trains its whole
model alone from the common starting point. A federated strategy that does not
beat this on its clients' own test data has not earned its communication.

Wire keys: ``"arrays"`` and ``"task-arrays"`` are empty both ways; replies carry
only ``"metrics"``. Scope preset: everything local. Client side: plain local
training; the whole model is kept in the client's local state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedmtl.scopes import ScopePreset
from strategies.registry import register


@register("local-only")
class LocalOnly(FedAvg):
    """No aggregation: the global arrays never change and clients keep everything local."""

    scope_preset: ClassVar[ScopePreset] = ScopePreset(local=("*",), default="local")
    conformance_traits = ("no-aggregation",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.current: ArrayRecord | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global arrays (they never change), then sample as FedAvg."""
        self.current = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Keep the current arrays; report FedAvg's metrics of the replies."""
        valid = [r for r in replies if not r.has_error()]
        if not valid:
            return None, None
        metrics = self.train_metrics_aggr_fn([r.content for r in valid], self.weighted_by_key)
        return self.current, metrics
