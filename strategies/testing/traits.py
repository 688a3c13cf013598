"""What a strategy promises, so the conformance kit knows which checks apply.

Traits (strings):

``"weighted-mean"``
    Aggregating two replies of the same task with ``num-examples`` 1 and 3 gives
    ``(a + 3 b) / 4`` (FedAvg, FedProx). Enables the sample-weight check.
``"server-optimizer"``
    The aggregate is a server optimiser step, not a mean (FedAdam, FedYogi,
    FedAdagrad, FedAvgM).
``"robust"``
    A Byzantine-robust rule that ignores sample counts (median, trimmed mean,
    Krum, Multi-Krum, Bulyan).
``"task-aware"``
    Weights depend on the task of each reply (the ``"client"`` record).

A strategy class declares its traits with a class attribute::

    class MyStrategy(FedAvg):
        conformance_traits = ("weighted-mean",)

Flower's strategies get theirs from :data:`BUILTIN_TRAITS` (matched on the exact
class, so a FedAvg subclass does not inherit ``"weighted-mean"``). A strategy
with neither gets no trait: every check but the sample-weight one runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.serverapp.strategy import Strategy

from strategies.registry import STRATEGIES

WEIGHTED_MEAN = "weighted-mean"
SERVER_OPTIMIZER = "server-optimizer"
ROBUST = "robust"
TASK_AWARE = "task-aware"
TRAIT_ATTRIBUTE = "conformance_traits"

# Flower's strategies by their registered names (the registry owns the classes).
_BUILTIN_TRAITS_BY_NAME: dict[str, frozenset[str]] = {
    "fedavg": frozenset({WEIGHTED_MEAN}),
    "fedprox": frozenset({WEIGHTED_MEAN}),  # the proximal term is applied by clients
    # With its defaults (lr 1, momentum 0) FedAvgM is FedAvg, but not in general.
    "fedavgm": frozenset({SERVER_OPTIMIZER}),
    "fedadam": frozenset({SERVER_OPTIMIZER}),
    "fedyogi": frozenset({SERVER_OPTIMIZER}),
    "fedadagrad": frozenset({SERVER_OPTIMIZER}),
    "fedmedian": frozenset({ROBUST}),
    "fedtrimmedavg": frozenset({ROBUST}),
    "krum": frozenset({ROBUST}),
    "multikrum": frozenset({ROBUST}),
    "bulyan": frozenset({ROBUST}),
}
BUILTIN_TRAITS: dict[type[Strategy], frozenset[str]] = {
    STRATEGIES.get(name): traits  # type: ignore[misc]
    for name, traits in _BUILTIN_TRAITS_BY_NAME.items()
}


def traits_of(strategy: Strategy, override: Iterable[str] | None = None) -> frozenset[str]:
    """The traits of ``strategy``: ``override``, its class attribute, or the built-in table."""
    if override is not None:
        return frozenset(override)
    declared = getattr(strategy, TRAIT_ATTRIBUTE, None)
    if declared is not None:
        if isinstance(declared, str):
            return frozenset({declared})
        return frozenset(declared)
    return BUILTIN_TRAITS.get(type(strategy), frozenset())
