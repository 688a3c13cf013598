"""A tiny plug-in strategy, imported by name in the registry tests."""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import FedAvg


class HalfStepFedAvg(FedAvg):
    """FedAvg with one extra option, as a user's own strategy would have."""

    def __init__(self, server_lr: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server_lr = server_lr


class StrictFedAvg(FedAvg):
    """FedAvg with an explicit signature (no ``**kwargs``)."""

    def __init__(self, fraction_train: float = 1.0, beta: float = 0.0) -> None:
        super().__init__(fraction_train=fraction_train)
        self.beta = beta


class NotAStrategy:
    """Callable, but not a Flower strategy."""


not_callable = 42
