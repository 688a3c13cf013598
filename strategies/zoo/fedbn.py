"""FedBN: federated averaging with local batch normalization.

Li et al., "FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization", ICLR 2021. Normalization layers (weights, biases and running
statistics) stay on each client, which absorbs feature shift; everything else is
averaged.

Wire keys: ``"arrays"`` = the backbone without normalization layers,
``"task-arrays"`` = the client's head (averaged among the clients of its task).
Scope preset: names matching ``*bn*``, ``*norm*``, ``*Norm*`` and batch-norm
counters local, ``heads.*`` task, the rest shared. Client side: plain local
training; normalization layers are kept in the client's local state.
"""

from __future__ import annotations

from typing import ClassVar

from flwr.serverapp.strategy import FedAvg

from fedmtl.scopes import ScopePreset
from strategies.registry import register

NORM_LAYERS = ("*bn*", "*norm*", "*Norm*", "*.num_batches_tracked")


@register("fedbn")
class FedBN(FedAvg):
    """FedAvg of everything but normalization layers; heads averaged per task."""

    scope_preset: ClassVar[ScopePreset] = ScopePreset(
        local=NORM_LAYERS, task=("heads.*",), shared=("*",), default="shared"
    )
    conformance_traits = ("weighted-mean",)
