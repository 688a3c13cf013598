"""FedPer: a shared body, personal heads.

Arivazhagan et al., "Federated Learning with Personalization Layers", 2019
(arXiv:1912.00818). The base layers are trained by FedAvg; the personalization
layers (here: every task head) never leave the client.

Wire keys: reads the shared ``"arrays"`` (``backbone.*``) and ``"metrics"``
(``num-examples``) of each reply; sends FedAvg's ``"arrays"`` and ``"config"``.
Scope preset: ``backbone.*`` shared, ``heads.*`` and batch-norm counters local.
Client side: plain local training of body and head; the head is kept in the
client's local state between rounds.
"""

from __future__ import annotations

from typing import ClassVar

from flwr.serverapp.strategy import FedAvg

from fedmtl.scopes import ScopePreset
from strategies.registry import register

# Heads stay on the client; batch-norm counters are bookkeeping, not weights.
PERSONAL_HEADS = ScopePreset(
    local=("heads.*", "*.num_batches_tracked"), shared=("backbone.*",), default="shared"
)


@register("fedper")
class FedPer(FedAvg):
    """FedAvg of the body; heads stay on the clients."""

    scope_preset: ClassVar[ScopePreset] = PERSONAL_HEADS
    conformance_traits = ("weighted-mean",)
