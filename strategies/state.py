"""Save and restore a Flower strategy's state between runs (checkpoints).

Flower's strategies keep their state in plain attributes: FedOpt's moments
(``m_t``, ``v_t``) and ``current_arrays``, FedAvgM's ``momentum_vector``. A
strategy that needs more control defines ``state_dict()`` and
``load_state_dict(state)`` itself (both, or neither); otherwise its state is
every attribute that is not callable (aggregation functions and selection
rules are configuration, rebuilt by the constructor).
"""

from __future__ import annotations

import copy
from typing import Any

from flwr.serverapp.strategy import Strategy


def _has_own_state(strategy: Strategy) -> bool:
    return callable(getattr(strategy, "state_dict", None)) and callable(
        getattr(strategy, "load_state_dict", None)
    )


def strategy_state(strategy: Strategy) -> dict[str, Any]:
    """A deep copy of ``strategy``'s state, ready to pickle.

    Uses the strategy's own ``state_dict()`` when it defines one.
    """
    if _has_own_state(strategy):
        state = strategy.state_dict()  # type: ignore[attr-defined]
    else:
        state = {k: v for k, v in vars(strategy).items() if not callable(v)}
    return copy.deepcopy(dict(state))


def load_strategy_state(strategy: Strategy, state: dict[str, Any]) -> None:
    """Restore a state returned by :func:`strategy_state` into a fresh ``strategy``."""
    state = copy.deepcopy(state)
    if _has_own_state(strategy):
        strategy.load_state_dict(state)  # type: ignore[attr-defined]
    else:
        vars(strategy).update(state)
