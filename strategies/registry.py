"""Strategy registry: names and ``"package.module:ClassName"`` to Flower strategies."""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
)

from fedmtl.registry import Registry, RegistryError


class StrategyOptionError(ValueError):
    """A strategy name or option that cannot be used, with what is allowed."""


@dataclass(frozen=True)
class Sampling:
    """How many nodes a round uses; shared by every strategy."""

    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_available_nodes: int = 2

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments understood by Flower's FedAvg family."""
        min_nodes = max(1, self.min_available_nodes)
        return {
            "fraction_train": self.fraction_train,
            "fraction_evaluate": self.fraction_evaluate,
            "min_train_nodes": max(1, int(self.fraction_train * min_nodes)),
            "min_evaluate_nodes": max(1, int(self.fraction_evaluate * min_nodes))
            if self.fraction_evaluate > 0
            else 0,
            "min_available_nodes": min_nodes,
        }


StrategyFactory = Callable[..., Strategy]
# Constructor arguments that fix the wire format; an experiment may not change them.
WIRE_ARGUMENTS = frozenset(
    {
        "arrayrecord_key",
        "configrecord_key",
        "weighted_by_key",
        "train_metrics_aggr_fn",
        "evaluate_metrics_aggr_fn",
    }
)
STRATEGIES: Registry[StrategyFactory] = Registry("strategy")


def register(name: str) -> Callable[[StrategyFactory], StrategyFactory]:
    """Register a strategy class (or factory) under ``name``.

    The factory is called with the sampling keyword arguments it accepts
    (``fraction_train``, ``min_available_nodes``, ...) plus the experiment's
    ``strategy-options``.
    """
    return STRATEGIES.register(name)


# Flower's own strategies, usable by name on the shared scope.
for _name, _cls in {
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
    "multikrum": MultiKrum,
    "bulyan": Bulyan,
}.items():
    STRATEGIES.add(_name, _cls)


def available_strategies() -> list[str]:
    """Names usable as ``strategy = "..."`` in an experiment file."""
    return STRATEGIES.names()


def _import_factory(reference: str) -> StrategyFactory:
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise StrategyOptionError(
            f"strategy '{reference}' must be a registered name or 'package.module:ClassName'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StrategyOptionError(
            f"strategy '{reference}': cannot import '{module_name}': {exc}"
        ) from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise StrategyOptionError(f"strategy '{reference}': '{module_name}' has no class '{attr}'")
    return factory  # type: ignore[no-any-return]


def _accepted_parameters(factory: StrategyFactory) -> tuple[set[str], bool]:
    signature = inspect.signature(factory)
    names = {p for p in signature.parameters if p != "self"}
    takes_kwargs = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
    )
    return names, takes_kwargs


def build_strategy(
    name: str, options: Mapping[str, Any] | None = None, sampling: Sampling | None = None
) -> Strategy:
    """Instantiate the strategy ``name`` with validated ``options``.

    Parameters
    ----------
    name : str
        A registered name (``"fedadam"``) or ``"package.module:ClassName"``.
    options : mapping, optional
        Constructor options (kebab-case or snake_case keys), e.g. ``{"eta": 0.01}``.
    sampling : Sampling, optional
        Node sampling shared by all strategies.

    Raises
    ------
    StrategyOptionError
        Unknown strategy, option not accepted by it, or a constructor error.
    """
    try:
        factory = _import_factory(name) if ":" in name else STRATEGIES.get(name)
    except RegistryError as exc:
        raise StrategyOptionError(str(exc)) from None
    accepted, takes_kwargs = _accepted_parameters(factory)
    # A factory taking **kwargs (a subclass forwarding to FedAvg) gets the sampling too.
    kwargs = {
        k: v for k, v in (sampling or Sampling()).kwargs().items() if k in accepted or takes_kwargs
    }
    for key, value in (options or {}).items():
        arg = key.replace("-", "_")
        if (arg not in accepted and not takes_kwargs) or arg in WIRE_ARGUMENTS:
            allowed = sorted(accepted - set(Sampling().kwargs()) - WIRE_ARGUMENTS)
            close = difflib.get_close_matches(arg, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise StrategyOptionError(
                f"strategy '{name}' has no option '{key}'{hint}; allowed: {allowed}"
            )
        kwargs[arg] = value
    try:
        strategy = factory(**kwargs)
    except (TypeError, ValueError) as exc:
        raise StrategyOptionError(f"strategy '{name}' rejected its options: {exc}") from exc
    if not isinstance(strategy, Strategy):
        raise StrategyOptionError(
            f"strategy '{name}' built a {type(strategy).__name__}, not a flwr Strategy"
        )
    return strategy
