"""LG-FedAvg: local representations, global heads.

Liang et al., "Think Locally, Act Globally: Federated Learning with Local and
Global Representations", 2020 (arXiv:2001.01523). Each client keeps its own
representation (the body); only the top layers are federated. With one head per
task, a head is averaged among the clients of its task.

Wire keys: ``"task-arrays"`` carries the client's head both ways; ``"arrays"``
is empty (nothing is shared by all clients). Scope preset: ``heads.*`` task,
everything else local. Client side: plain local training; the body is kept in
the client's local state between rounds.
"""

from __future__ import annotations

from typing import ClassVar

from flwr.serverapp.strategy import FedAvg

from fedmtl.scopes import ScopePreset
from strategies.registry import register


@register("lg-fedavg")
class LGFedAvg(FedAvg):
    """Local representation, heads averaged per task."""

    scope_preset: ClassVar[ScopePreset] = ScopePreset(
        task=("heads.*",), local=("backbone.*",), default="local"
    )
    conformance_traits = ("weighted-mean",)
