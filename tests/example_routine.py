"""A strategy with its own client behaviour, in one file: warm up the head, then train as usual.

Run it with ``--set strategy=tests.example_routine:HeadWarmup``. The server side
names its client routine and option in every train message; the client side
is a routine registered in one line. Clients find it because they import the
strategy's module before looking the routine up.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedmtl.models import MultiTaskModel
from fedmtl.records import ROUTINE, with_entries
from fedmtl.routines import ClientRoutine, LocalWork, register_routine

WARMUP_EPOCHS = "warmup-epochs"


class HeadWarmup(FedAvg):
    """FedAvg whose clients first train their task's head alone for ``warmup_epochs``."""

    def __init__(self, warmup_epochs: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.warmup_epochs = warmup_epochs

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train messages, naming the routine and its option."""
        config = with_entries(config, {ROUTINE: "head-warmup", WARMUP_EPOCHS: self.warmup_epochs})
        return super().configure_train(server_round, arrays, config, grid)


@register_routine("head-warmup")
class HeadWarmupRoutine(ClientRoutine):
    """The head alone for ``warmup-epochs``, then the usual round on every trainable entry."""

    def update(self, work: LocalWork, model: MultiTaskModel) -> dict[str, float]:
        head = work.keys.trainable & work.head_keys(model)
        work.fit(model, head, epochs=work.instruction.extra_int(WARMUP_EPOCHS, 1))
        return super().update(work, model)
