"""Seeded client sets of a run: held-out (unseen) clients, the evaluation panel, attackers.

Both are chosen from client ids with their own seeded generator, so they are the
same in every run of an experiment (and in a resumed run) whatever the strategy.
"""

from __future__ import annotations

import random

from fedmtl.config import ExperimentConfig

_HOLDOUT_SALT = 7_919
_PANEL_SALT = 104_729
_ATTACK_SALT = 1_299_709


def holdout_clients(cfg: ExperimentConfig) -> frozenset[int]:
    """Clients kept out of training, evaluated once at the end as unseen clients."""
    rng = random.Random(cfg.seed * 1_000_003 + _HOLDOUT_SALT)
    return frozenset(rng.sample(range(cfg.num_clients), cfg.holdout_clients))


def evaluation_panel(cfg: ExperimentConfig) -> frozenset[int] | None:
    """The fixed clients evaluated every evaluation round (``None``: every sampled client)."""
    if cfg.evaluate_panel == 0:
        return None
    held_out = holdout_clients(cfg)
    candidates = [c for c in range(cfg.num_clients) if c not in held_out]
    rng = random.Random(cfg.seed * 1_000_003 + _PANEL_SALT)
    return frozenset(rng.sample(candidates, cfg.evaluate_panel))


def attackers(cfg: ExperimentConfig) -> frozenset[int]:
    """The malicious clients: ``round(attack-fraction x num-clients)``, seeded.

    Empty when ``attack = "none"``.
    """
    if cfg.attack == "none" or cfg.attack_fraction == 0:
        return frozenset()
    count = round(cfg.attack_fraction * cfg.num_clients)
    rng = random.Random(cfg.seed * 1_000_003 + _ATTACK_SALT)
    return frozenset(rng.sample(range(cfg.num_clients), count))
