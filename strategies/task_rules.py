"""How a task group's task-scope replies are aggregated: a registry of rules.

:class:`~strategies.scoped.ScopedStrategy` hands the shared scope to the inner
strategy, and aggregates each task group's ``"task-arrays"`` with a
:class:`TaskRule` chosen by name (``task-aggregation`` in an experiment):

``"auto"`` (the default)
    The rule of the inner strategy: FedMedian -> ``median``, FedTrimmedAvg ->
    ``trimmed-mean``, Krum -> ``krum``, MultiKrum -> ``multikrum``, Bulyan ->
    ``bulyan`` (matched along the class's MRO, so subclasses follow their
    parent); a strategy class can name its rule with a ``task_aggregation``
    class attribute; every other strategy -> ``mean``.
``"mean"``
    The ``num-examples``-weighted mean (what every run did before robust rules).
``"median"``
    The coordinate-wise median, unweighted (as FedMedian).
``"trimmed-mean"``
    The coordinate-wise mean after cutting ``int(beta * n)`` replies at each end
    (as FedTrimmedAvg, whose ``trim_mean`` it calls).
``"krum"``, ``"multikrum"``
    Select the reply (Krum) or the ``num_nodes_to_select`` replies (MultiKrum)
    with the lowest Krum scores for ``f`` malicious replies, then take the
    ``num-examples``-weighted mean of the selection (Flower's ``select_multikrum``).
``"bulyan"``
    MultiKrum-select ``n - 2f`` replies, then per coordinate the mean of the
    ``n - 4f`` values closest to their median (Flower's Bulyan maths).

The parameters (``beta``, ``f`` = ``num_malicious_nodes``, ``num_nodes_to_select``)
are read from the inner strategy, so the task scope uses the same rule *and*
settings as the shared scope; an inner strategy without them gives Flower's
defaults (``beta`` 0.2, ``f`` 0, one node selected).

Small task groups
-----------------
A task group is usually much smaller than the round's sample. Krum and
MultiKrum need ``n >= 2f + 3`` replies and Bulyan ``n >= 4f + 3`` for their
guarantees; with fewer, the group falls back to the coordinate-wise median
(robust for any ``n``: for two replies it is their mean, for one the reply
itself), logged once per task at WARNING (later rounds at DEBUG). MultiKrum
selects at most ``n`` replies. The trimmed mean cuts nothing when
``int(beta * n)`` is 0, as Flower's FedTrimmedAvg does on the shared scope.
A group is never skipped for being small: one small group must not cost the
whole round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
from flwr.app import RecordDict
from flwr.serverapp.strategy import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum, Strategy
from flwr.serverapp.strategy.bulyan import aggregate_n_closest_weights
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean
from flwr.serverapp.strategy.multikrum import select_multikrum

from fedmtl.records import TASK_ARRAYS, to_record
from fedmtl.registry import Registry
from strategies.aggregation import NDArrays, cast_like, weighted_average

__all__ = [
    "AUTO",
    "TASK_RULES",
    "TaskRule",
    "auto_rule_name",
    "task_rule",
    "task_rule_names",
]
logger = logging.getLogger(__name__)

AUTO = "auto"
Arrays = dict[str, npt.NDArray[np.generic]]


class TaskRule(Protocol):
    """Aggregates one task group's task-scope replies.

    ``updates`` are the replies' task arrays (same keys and shapes), ``weights``
    their ``num-examples``; ``task`` names the group (for log lines only).
    """

    @property
    def name(self) -> str:
        """The rule's registered name."""
        ...

    def __call__(self, updates: Sequence[NDArrays], weights: Sequence[float], task: str) -> Arrays:
        """The group's aggregate, in the dtypes of the first update."""
        ...


def _stacked(updates: Sequence[NDArrays]) -> dict[str, npt.NDArray[np.generic]]:
    """Each key's values stacked on a new first axis (keys and shapes checked)."""
    if not updates:
        raise ValueError("nothing to aggregate")
    keys = list(updates[0])
    out = {}
    for key in keys:
        values = []
        for update in updates:
            if key not in update or set(update) != set(keys):
                raise ValueError(f"updates hold different keys: {sorted(set(update) ^ set(keys))}")
            values.append(np.asarray(update[key]))
        shapes = {v.shape for v in values}
        if len(shapes) != 1:
            raise ValueError(f"'{key}' has shapes {sorted(shapes)}")
        out[key] = np.stack(values)
    return out


def coordinate_median(updates: Sequence[NDArrays]) -> Arrays:
    """The coordinate-wise median of ``updates`` (FedMedian's maths), cast back."""
    first = updates[0] if updates else {}
    return {
        key: cast_like(
            np.asarray(np.median(stack, axis=0)),  # type: ignore[type-var]
            np.asarray(first[key]).dtype,
        )
        for key, stack in _stacked(updates).items()
    }


class _FallbackLog:
    """Log a fallback once per task at WARNING, then at DEBUG."""

    def __init__(self) -> None:
        self.warned: set[str] = set()

    def __call__(self, task: str, reason: str) -> None:
        level = logging.DEBUG if task in self.warned else logging.WARNING
        self.warned.add(task)
        logger.log(level, "task '%s': %s; coordinate-wise median used", task, reason)


@dataclass(frozen=True)
class MeanRule:
    """The ``num-examples``-weighted mean (:func:`~strategies.aggregation.weighted_average`)."""

    name: str = "mean"

    def __call__(self, updates: Sequence[NDArrays], weights: Sequence[float], task: str) -> Arrays:
        """Weighted mean of the group."""
        return weighted_average(updates, weights)


@dataclass(frozen=True)
class MedianRule:
    """The coordinate-wise median; weights are ignored (as FedMedian)."""

    name: str = "median"

    def __call__(self, updates: Sequence[NDArrays], weights: Sequence[float], task: str) -> Arrays:
        """Coordinate-wise median of the group."""
        return coordinate_median(updates)


@dataclass(frozen=True)
class TrimmedMeanRule:
    """Cut ``int(beta * n)`` values at each end per coordinate, average the rest."""

    beta: float = 0.2
    name: str = "trimmed-mean"

    def __post_init__(self) -> None:
        """Refuse a ``beta`` outside [0, 0.5) (NaN too)."""
        if not 0.0 <= self.beta < 0.5:
            raise ValueError(f"trimmed-mean: beta must be in [0, 0.5), got {self.beta}")

    def __call__(self, updates: Sequence[NDArrays], weights: Sequence[float], task: str) -> Arrays:
        """Trimmed mean of the group (Flower's ``trim_mean``)."""
        first = updates[0] if updates else {}
        return {
            key: cast_like(np.asarray(trim_mean(stack, self.beta)), np.asarray(first[key]).dtype)
            for key, stack in _stacked(updates).items()
        }


def _check_malicious(rule: str, num_malicious: int) -> None:
    if isinstance(num_malicious, bool) or not isinstance(num_malicious, int) or num_malicious < 0:
        raise ValueError(f"{rule}: num_malicious_nodes must be an int >= 0, got {num_malicious!r}")


def _krum_select(updates: Sequence[NDArrays], num_malicious: int, num_select: int) -> list[int]:
    """Indices of the replies Flower's ``select_multikrum`` keeps, best first."""
    _stacked(updates)  # same keys and shapes, or a clear error
    contents = [RecordDict({TASK_ARRAYS: to_record(u)}) for u in updates]
    selected = select_multikrum(contents, num_malicious, num_select)
    return [next(i for i, c in enumerate(contents) if c is chosen) for chosen in selected]


@dataclass(frozen=True)
class KrumRule:
    """Krum (``num_select`` 1) or MultiKrum: the lowest-scored replies, weighted mean."""

    num_malicious: int = 0
    num_select: int = 1
    name: str = "krum"
    fallback: _FallbackLog = field(default_factory=_FallbackLog, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Refuse a negative ``f`` or fewer than one node to select."""
        _check_malicious(self.name, self.num_malicious)
        if isinstance(self.num_select, bool) or not isinstance(self.num_select, int):
            raise ValueError(f"{self.name}: num_nodes_to_select must be an int")
        if self.num_select < 1:
            raise ValueError(
                f"{self.name}: num_nodes_to_select must be >= 1, got {self.num_select}"
            )

    def __call__(self, updates: Sequence[NDArrays], weights: Sequence[float], task: str) -> Arrays:
        """Krum-select, then average the selection by ``num-examples``."""
        needed = 2 * self.num_malicious + 3
        if len(updates) < needed:
            self.fallback(task, f"{self.name} needs >= 2f+3 = {needed} replies, got {len(updates)}")
            return coordinate_median(updates)
        chosen = _krum_select(updates, self.num_malicious, min(self.num_select, len(updates)))
        return weighted_average([updates[i] for i in chosen], [weights[i] for i in chosen])


@dataclass(frozen=True)
class BulyanRule:
    """Bulyan: MultiKrum-select ``n - 2f``, then average the ``n - 4f`` nearest the median."""

    num_malicious: int = 0
    name: str = "bulyan"
    fallback: _FallbackLog = field(default_factory=_FallbackLog, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Refuse a negative ``f``."""
        _check_malicious(self.name, self.num_malicious)

    def __call__(self, updates: Sequence[NDArrays], weights: Sequence[float], task: str) -> Arrays:
        """Bulyan's aggregate of the group (weights ignored, as Flower's Bulyan)."""
        f, n = self.num_malicious, len(updates)
        if n < 4 * f + 3:
            self.fallback(task, f"bulyan needs >= 4f+3 = {4 * f + 3} replies, got {n}")
            return coordinate_median(updates)
        theta = n - 2 * f
        chosen = [updates[i] for i in _krum_select(updates, f, theta)]
        keys = list(updates[0])
        selected = [[np.asarray(u[k]) for k in keys] for u in chosen]
        medians = [np.median(np.stack(layer), axis=0) for layer in zip(*selected, strict=True)]
        closest = aggregate_n_closest_weights(medians, selected, theta - 2 * f)
        return {
            k: cast_like(np.asarray(v), np.asarray(updates[0][k]).dtype)
            for k, v in zip(keys, closest, strict=True)
        }


# name -> a builder of the rule from the inner strategy (whose settings it reuses)
RuleBuilder = Callable[[Strategy], TaskRule]
TASK_RULES: Registry[RuleBuilder] = Registry("task aggregation")
TASK_RULES.add("mean", lambda inner: MeanRule())
TASK_RULES.add("median", lambda inner: MedianRule())
TASK_RULES.add("trimmed-mean", lambda inner: TrimmedMeanRule(float(getattr(inner, "beta", 0.2))))
TASK_RULES.add("krum", lambda inner: KrumRule(getattr(inner, "num_malicious_nodes", 0)))
TASK_RULES.add(
    "multikrum",
    lambda inner: KrumRule(
        getattr(inner, "num_malicious_nodes", 0),
        getattr(inner, "num_nodes_to_select", 1),
        name="multikrum",
    ),
)
TASK_RULES.add("bulyan", lambda inner: BulyanRule(getattr(inner, "num_malicious_nodes", 0)))

# Flower's robust strategies and the rule "auto" gives them (most derived class first).
AUTO_RULES: dict[type[Strategy], str] = {
    Krum: "krum",
    MultiKrum: "multikrum",
    Bulyan: "bulyan",
    FedMedian: "median",
    FedTrimmedAvg: "trimmed-mean",
}


def auto_rule_name(inner: Strategy) -> str:
    """The rule ``"auto"`` picks for ``inner`` (see the module docstring)."""
    declared = getattr(inner, "task_aggregation", None)
    if isinstance(declared, str):
        if declared not in TASK_RULES:
            raise ValueError(
                f"{type(inner).__name__}.task_aggregation = '{declared}' is not one of "
                f"{TASK_RULES.names()}"
            )
        return declared
    for cls in type(inner).__mro__:
        if cls in AUTO_RULES:
            return AUTO_RULES[cls]
    return "mean"


def task_rule_names() -> list[str]:
    """Every valid ``task-aggregation`` value: ``"auto"`` and the registered rules."""
    return [AUTO, *TASK_RULES.names()]


def task_rule(name: str, inner: Strategy) -> TaskRule:
    """The rule ``name`` (or ``"auto"``), with its settings taken from ``inner``.

    Raises
    ------
    ValueError
        ``name`` is not a rule, or ``inner``'s settings are out of range for it.
    """
    if name == AUTO:
        name = auto_rule_name(inner)
    if name not in TASK_RULES:
        raise ValueError(f"task-aggregation '{name}' is not one of {task_rule_names()}")
    return TASK_RULES.get(name)(inner)
