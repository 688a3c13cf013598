"""FedBABU: federate the body with the head frozen, fine-tune the head to personalize.

Oh, Kim and Yun, "FedBABU: Towards Enhanced Representation for Federated Image
Classification", ICLR 2022. During federation every head stays at its (random or
pretrained) initialization, identical on all clients of a task, and only the body
is trained and averaged: the body learns a representation for a fixed classifier
instead of chasing heads that drift apart. Personalization is a short local
fine-tuning of the head on each client's training split before it is evaluated.

Here the fine-tuning runs at every evaluation, on a copy of the head that is
thrown away afterwards, so each round's evaluation reports what a client would get
if federation stopped then ("fine-tuned at the end" at every possible end). The
paper fine-tunes the whole model; fedmtl fine-tunes the head only (the body is the
federated artefact, and head-only fine-tuning is the cheaper variant the paper
also reports).

Wire keys: reads the shared ``"arrays"`` (the body) and ``"metrics"``; sends
FedAvg's train messages and, in every evaluate message's ``"config"``,
``"head-finetune-epochs"`` (``fedmtl.records.HEAD_FINETUNE_EPOCHS``). Scope
preset: ``heads.*`` frozen, ``backbone.*`` shared, batch-norm counters local.
Client side: the ``default`` client routine (``fedmtl.routines``) trains only
unfrozen entries (the body) and, on an evaluate message with
``head-finetune-epochs > 0``, trains a copy of its task's head for that many
epochs on its training split (the run's optimizer and learning rate) before
evaluating.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedmtl.records import HEAD_FINETUNE_EPOCHS, with_entries
from fedmtl.scopes import ScopePreset
from strategies.registry import register


@register("fedbabu")
class FedBABU(FedAvg):
    """FedAvg of the body with heads frozen; heads fine-tuned locally before evaluation.

    Parameters
    ----------
    finetune_epochs : int
        Epochs of head fine-tuning a client runs before each evaluation (paper:
        5); 0 evaluates the frozen head as it is.
    **kwargs
        FedAvg's sampling arguments.
    """

    scope_preset: ClassVar[ScopePreset] = ScopePreset(
        frozen=("heads.*",),
        local=("*.num_batches_tracked",),
        shared=("backbone.*",),
        default="shared",
    )
    conformance_traits = ("weighted-mean",)

    def __init__(self, finetune_epochs: int = 5, **kwargs: Any) -> None:
        if finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {finetune_epochs}")
        super().__init__(**kwargs)
        self.finetune_epochs = finetune_epochs

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's evaluate messages, with ``head-finetune-epochs`` in their config."""
        config = with_entries(config, {HEAD_FINETUNE_EPOCHS: self.finetune_epochs})
        return super().configure_evaluate(server_round, arrays, config, grid)
