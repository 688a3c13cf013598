"""Client routines: the client side of each algorithm, registered by name.

The ClientApp decodes a message into a :class:`LocalWork`, asks
:func:`routine_for` for the routine the server's config names
(``"client-routine"``; ``default`` when absent) and encodes what it returns.
Built in: ``default`` (:class:`ClientRoutine`: local training, FedProx's
proximal term, head fine-tuning and the global view at evaluation),
``fedrep`` and ``ditto``.
"""

from fedmtl.routines.base import (
    ROUTINES,
    ClientRoutine,
    register_routine,
    resolve_routine,
    routine_for,
    train_metrics,
)
from fedmtl.routines.ditto import PERSONAL_STATE, DittoRoutine
from fedmtl.routines.fedrep import FedRepRoutine
from fedmtl.routines.work import LOCAL_STATE, ClientKeys, LocalWork, Trained

__all__ = [
    "LOCAL_STATE",
    "PERSONAL_STATE",
    "ROUTINES",
    "ClientKeys",
    "ClientRoutine",
    "DittoRoutine",
    "FedRepRoutine",
    "LocalWork",
    "Trained",
    "register_routine",
    "resolve_routine",
    "routine_for",
    "train_metrics",
]
