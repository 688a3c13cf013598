"""Server-side aggregation strategies for fedmtl (plug-in package).

Strategies work on Flower records (numpy arrays) only: they never import torch
models, training code or the client app. ``build_strategy`` turns a name from
the experiment file into a Flower ``Strategy``; :class:`ScopedStrategy` makes any
Flower strategy multi-task aware.
"""

from strategies import zoo as _zoo  # noqa: F401  (registers the zoo)
from strategies.registry import (
    STRATEGIES,
    StrategyOptionError,
    available_strategies,
    build_strategy,
    register,
)
from strategies.scoped import ScopedOptions, ScopedStrategy

__all__ = [
    "STRATEGIES",
    "ScopedOptions",
    "ScopedStrategy",
    "StrategyOptionError",
    "available_strategies",
    "build_strategy",
    "register",
]
