"""FedRep's client: fit the head on the received body, then train the body."""

from __future__ import annotations

from fedmtl.models import MultiTaskModel
from fedmtl.records import HEAD_EPOCHS
from fedmtl.routines.base import ClientRoutine, register_routine
from fedmtl.routines.work import LocalWork


@register_routine("fedrep")
class FedRepRoutine(ClientRoutine):
    """``head-epochs`` on the task's head (body frozen), then the round's epochs on the rest.

    Sent by :class:`strategies.zoo.fedrep.FedRep`; evaluation is the default one.
    """

    reads = ClientRoutine.reads | {HEAD_EPOCHS}

    def update(self, work: LocalWork, model: MultiTaskModel) -> dict[str, float]:
        """Head first, then body; the reported loss is the body phase's."""
        if work.instruction.head_epochs < 1:
            raise ValueError(f"client routine 'fedrep' needs {HEAD_EPOCHS} >= 1")
        head = work.keys.trainable & work.head_keys(model)
        work.fit(model, head, epochs=work.instruction.head_epochs)
        return work.fit(model, work.keys.trainable - head)
