"""Ditto: a global model by FedAvg, and a personal model pulled towards it.

Li, Hu, Beirami and Smith, "Ditto: Fair and Robust Federated Learning Through
Personalization", ICML 2021. Each client keeps a personal model ``v_k`` besides
the global model ``w``. In a round the client (1) trains the received global
model ``w^t`` as in FedAvg and sends it back, and (2) trains its personal model
on ``F_k(v_k) + lambda / 2 * ||v_k - w^t||^2``. The server averages the global
models only; clients are evaluated with their personal models. ``lambda = 0``
gives local training, a large ``lambda`` the global model.

Wire keys: reads the shared ``"arrays"``, the ``"task-arrays"`` (averaged per task
by ``ScopedStrategy``) and ``"metrics"``; sends ``"client-routine" = "ditto"`` and
``"personal-lambda"`` (``fedmtl.records.ROUTINE``, ``PERSONAL_LAMBDA``) in the
``"config"`` of every train and evaluate message. Scope preset (the global
model): ``backbone.*`` shared, ``heads.*`` task, batch-norm counters local.
Client side: the ``ditto`` client routine (``fedmtl.routines.ditto``) keeps
``v_k`` (all entries it trains) in the client's state, trains it after the
global model with the proximal term over the received shared and task entries
(the same code path as FedProx), and evaluates ``v_k``; before its first
training round ``v_k = w``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedmtl.records import PERSONAL_LAMBDA, ROUTINE, with_entries
from fedmtl.scopes import ScopePreset
from strategies.registry import register


@register("ditto")
class Ditto(FedAvg):
    """FedAvg of the global model; clients also keep a proximal personal model.

    Parameters
    ----------
    lam : float
        The proximal weight ``lambda`` of the personal objective (paper: tuned in
        {0.05, 0.1, 0.2, 0.5, 1, 2}); must be >= 0.
    **kwargs
        FedAvg's sampling arguments.
    """

    scope_preset: ClassVar[ScopePreset] = ScopePreset(
        task=("heads.*",),
        local=("*.num_batches_tracked",),
        shared=("backbone.*",),
        default="shared",
    )
    conformance_traits = ("weighted-mean",)

    def __init__(self, lam: float = 0.1, **kwargs: Any) -> None:
        if not lam >= 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        super().__init__(**kwargs)
        self.lam = float(lam)

    def _with_lambda(self, config: ConfigRecord) -> ConfigRecord:
        return with_entries(config, {ROUTINE: "ditto", PERSONAL_LAMBDA: self.lam})

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train messages, naming the ``ditto`` routine and ``personal-lambda``."""
        return super().configure_train(server_round, arrays, self._with_lambda(config), grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's evaluate messages; the ``ditto`` routine evaluates the personal model."""
        return super().configure_evaluate(server_round, arrays, self._with_lambda(config), grid)
