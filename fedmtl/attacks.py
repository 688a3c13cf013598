"""Malicious clients for robustness experiments (simulation only).

A seeded fraction of clients (:func:`fedmtl.panels.attackers`) misbehaves in
every round it trains:

* ``label-flip``: trains honestly on flipped labels (``y -> num_classes - 1 - y``);
* ``sign-flip``: sends ``w - s * u`` instead of ``w + u`` (``u``: its honest update);
* ``scale``: sends ``w + s * u`` (a boosted update);
* ``noise``: sends ``w + z`` with Gaussian ``z`` of ``s`` times the honest update's norm.

``s`` is ``attack-scale``. Only floating-point entries of what the client sends
(shared and task scopes) are changed; the reply stays well-formed, so it passes
validation: only a robust aggregation rule can limit its damage. The server is
not told who attacks; ``summary.json`` lists the attackers for the analysis.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from fedmtl.records import NDArrays

ATTACKS = ("none", "label-flip", "sign-flip", "scale", "noise")


def flip_labels(y: npt.NDArray[np.int64], num_classes: int) -> npt.NDArray[np.int64]:
    """``num_classes - 1 - y``: every example gets a wrong label (for 2+ classes)."""
    return (num_classes - 1 - y).astype(np.int64)


def poison_update(
    attack: str, sent: Mapping[str, np.ndarray], trained: NDArrays, scale: float, seed: int
) -> NDArrays:
    """What a malicious client sends instead of ``trained`` (``sent``: what it received).

    ``label-flip`` and ``none`` return ``trained`` unchanged (the former poisons
    the data, not the update).
    """
    if attack in ("none", "label-flip"):
        return dict(trained)
    floating = [k for k, v in trained.items() if np.issubdtype(v.dtype, np.floating)]
    updates = {k: trained[k].astype(np.float64) - np.asarray(sent[k], np.float64) for k in floating}
    if attack == "sign-flip":
        changed = {k: -scale * u for k, u in updates.items()}
    elif attack == "scale":
        changed = {k: scale * u for k, u in updates.items()}
    elif attack == "noise":
        rng = np.random.default_rng(seed)
        norm = float(np.sqrt(sum(float(np.sum(u**2)) for u in updates.values())))
        draws = {k: rng.standard_normal(u.shape) for k, u in updates.items()}
        draw_norm = float(np.sqrt(sum(float(np.sum(d**2)) for d in draws.values()))) or 1.0
        changed = {k: d * (scale * norm / draw_norm) for k, d in draws.items()}
    else:
        raise ValueError(f"unknown attack '{attack}'; allowed: {list(ATTACKS)}")
    out = dict(trained)
    for key, delta in changed.items():
        out[key] = (np.asarray(sent[key], np.float64) + delta).astype(trained[key].dtype)
    return out
