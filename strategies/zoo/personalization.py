"""Personalization strategies that are scope presets on top of FedAvg.

In fedmtl a model's entries are frozen, shared (averaged over all sampled
clients), task (averaged per task) or local (never leave the client). Several
personalization methods are exactly a choice of scopes; each class here is
FedAvg plus its ``scope_preset``, which replaces the experiment's ``scope-*``
keys (unless ``scopes-from = "experiment"``). Clients need nothing beyond plain
local training; what travels is what the preset makes shared or task-scoped.

* ``fedper`` -- FedPer (Arivazhagan et al., "Federated Learning with
  Personalization Layers", 2019): the body (``backbone.*``) is shared, the heads
  are local. Wire: ``"arrays"`` = backbone.
* ``lg-fedavg`` -- LG-FedAvg (Liang et al., "Think Locally, Act Globally", 2020):
  the representation is local, the heads are global; with one head per task, a
  head is averaged among the clients of its task. Wire: ``"task-arrays"`` = the
  client's head; ``"arrays"`` is empty.
* ``fedbn`` -- FedBN (Li et al., "FedBN: Federated Learning on Non-IID Features
  via Local Batch Normalization", ICLR 2021): normalization layers (``*bn*``,
  ``*norm*``, ``*Norm*`` and their counters) stay local, everything else is
  shared; heads are averaged per task. Wire: ``"arrays"`` = backbone without
  norm layers, ``"task-arrays"`` = head.
* ``local-only`` -- the lower reference: nothing leaves a client, nothing is
  aggregated; each client trains alone. Wire: both records empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from strategies.registry import register

NORM_LAYERS = ("*bn*", "*norm*", "*Norm*", "*.num_batches_tracked")


@register("fedper")
class FedPer(FedAvg):
    """FedAvg of the body; heads stay on the clients."""

    scope_preset: ClassVar[dict[str, Any]] = {
        "local": ("heads.*", "*.num_batches_tracked"),
        "shared": ("backbone.*",),
        "default": "shared",
    }
    conformance_traits = ("weighted-mean",)


@register("lg-fedavg")
class LGFedAvg(FedAvg):
    """Local representation, heads averaged per task."""

    scope_preset: ClassVar[dict[str, Any]] = {
        "task": ("heads.*",),
        "local": ("backbone.*",),
        "default": "local",
    }
    conformance_traits = ("weighted-mean",)


@register("fedbn")
class FedBN(FedAvg):
    """FedAvg of everything but normalization layers; heads averaged per task."""

    scope_preset: ClassVar[dict[str, Any]] = {
        "local": NORM_LAYERS,
        "task": ("heads.*",),
        "shared": ("*",),
        "default": "shared",
    }
    conformance_traits = ("weighted-mean",)


@register("local-only")
class LocalOnly(FedAvg):
    """No aggregation: the global arrays never change and clients keep everything local."""

    scope_preset: ClassVar[dict[str, Any]] = {"local": ("*",), "default": "local"}
    conformance_traits = ("no-aggregation",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.current: ArrayRecord | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global arrays (they never change), then sample as FedAvg."""
        self.current = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Keep the current arrays; report FedAvg's metrics of the replies."""
        valid = [r for r in replies if not r.has_error()]
        if not valid:
            return None, None
        metrics = self.train_metrics_aggr_fn([r.content for r in valid], self.weighted_by_key)
        return self.current, metrics
