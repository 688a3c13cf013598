"""Ditto's client: the global model as FedAvg trains it, and a personal model pulled towards it."""

from __future__ import annotations

import dataclasses

from fedmtl.models import MultiTaskModel
from fedmtl.models.state import export_arrays
from fedmtl.records import PERSONAL_LAMBDA, NDArrays
from fedmtl.routines.base import ClientRoutine, register_routine
from fedmtl.routines.work import LOCAL_STATE, LocalWork, Trained

#: State group of Ditto's personal model (every entry the client trains).
PERSONAL_STATE = "fedmtl-personal"


@register_routine("ditto")
class DittoRoutine(ClientRoutine):
    """Train the global model (default routine), then the personal model ``v``.

    ``v`` trains every trainable entry on ``F(v) + lambda / 2 * ||v - w||^2``
    (``w``: the received arrays, ``lambda``: ``personal-lambda``) with its own
    seed, and is kept in the client's state; before its first round ``v`` is
    the received model with the client's new local scope. Evaluation measures
    ``v``. Sent by :class:`strategies.zoo.ditto.Ditto`.
    """

    reads = ClientRoutine.reads | {PERSONAL_LAMBDA}

    def train(self, work: LocalWork) -> Trained:
        """The global model's round, then the personal model's (kept in the state)."""
        lam = work.instruction.personal_lambda
        if lam is None:
            raise ValueError(f"client routine 'ditto' needs {PERSONAL_LAMBDA}")
        trained = super().train(work)
        trained.model.cpu()
        personal = _personal_model(work, work.local_arrays(trained.model))
        settings = dataclasses.replace(work.settings, proximal_mu=lam, seed=work.settings.seed + 1)
        work.fit(personal, work.keys.trainable, settings=settings)
        personal.cpu()
        return dataclasses.replace(
            trained, state={PERSONAL_STATE: export_arrays(personal, work.keys.personal)}
        )

    def evaluated_model(self, work: LocalWork) -> MultiTaskModel:
        """The personal model (the received one before the client first trained)."""
        return _personal_model(work, work.state.get(LOCAL_STATE))


def _personal_model(work: LocalWork, local: NDArrays | None) -> MultiTaskModel:
    """The received arrays, then ``local``, then the personal model kept so far (if any)."""
    return work.restore(local, work.state.get(PERSONAL_STATE))
