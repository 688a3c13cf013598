"""What malicious clients do to their labels and updates: the attack registry (numpy only).

:mod:`fedmtl.attacks` installs these in simulation as a Flower client mod; this
module holds the maths and the registry, below the config layer, so the
``attack`` key's choices are the registry's names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt

from fedmtl.data import ClientData
from fedmtl.registry import Registry

NDArrays = dict[str, npt.NDArray[np.generic]]

#: Node-config key naming the labels a node trains on (a name in :data:`LABELS`).
TRAIN_LABELS = "fedmtl-train-labels"
HONEST = "honest"

Labels = Callable[[npt.NDArray[np.int64], int], npt.NDArray[np.int64]]
Floats = dict[str, npt.NDArray[np.float64]]
#: Poisoning of an honest update: ``(updates, scale, seed) -> what is added to the received``.
Poison = Callable[[Floats, float, int], Floats]


def flip_labels(y: npt.NDArray[np.int64], num_classes: int) -> npt.NDArray[np.int64]:
    """``num_classes - 1 - y``: every example gets a wrong label (for 2+ classes)."""
    return (num_classes - 1 - y).astype(np.int64)


def _honest(y: npt.NDArray[np.int64], num_classes: int) -> npt.NDArray[np.int64]:
    return y


#: Label name (node config :data:`TRAIN_LABELS`) -> the labels a node trains on.
LABELS: Registry[Labels] = Registry("train labels")
LABELS.add(HONEST, _honest)
LABELS.add("flipped", flip_labels)


def relabel(data: ClientData, labels: str, num_classes: int) -> ClientData:
    """``data`` with its training labels replaced as ``labels`` says (test labels kept)."""
    return dataclasses.replace(data, y_train=LABELS.get(labels)(data.y_train, num_classes))


def _sign_flip(updates: Floats, scale: float, seed: int) -> Floats:
    return {k: -scale * u for k, u in updates.items()}


def _scale(updates: Floats, scale: float, seed: int) -> Floats:
    return {k: scale * u for k, u in updates.items()}


def _noise(updates: Floats, scale: float, seed: int) -> Floats:
    rng = np.random.default_rng(seed)
    norm = float(np.sqrt(sum(float(np.sum(u**2)) for u in updates.values())))
    draws = {k: rng.standard_normal(u.shape) for k, u in updates.items()}
    draw_norm = float(np.sqrt(sum(float(np.sum(d**2)) for d in draws.values()))) or 1.0
    return {k: d * (scale * norm / draw_norm) for k, d in draws.items()}


@dataclasses.dataclass(frozen=True)
class Attack:
    """What an attacker does differently: the labels it trains on, how it poisons its update.

    ``task_kinds`` lists the task kinds the attack makes sense for (``None``: any);
    flipping labels means nothing for a regression target.
    """

    train_labels: str = HONEST
    poison: Poison | None = None
    task_kinds: frozenset[str] | None = None


#: Attack name (``attack`` in the experiment) -> what the attacking clients do.
ATTACKS: Registry[Attack] = Registry("attack")
ATTACKS.add("none", Attack())
ATTACKS.add("label-flip", Attack(train_labels="flipped", task_kinds=frozenset({"classification"})))
ATTACKS.add("sign-flip", Attack(poison=_sign_flip))
ATTACKS.add("scale", Attack(poison=_scale))
ATTACKS.add("noise", Attack(poison=_noise))


def poison_update(
    attack: str,
    sent: Mapping[str, npt.NDArray[np.generic]],
    trained: NDArrays,
    scale: float,
    seed: int,
) -> NDArrays:
    """What a malicious client sends instead of ``trained`` (``sent``: what it received).

    An attack that poisons no update (``label-flip``) returns ``trained``
    unchanged. ``sent`` is read in ``trained``'s dtypes, as the client's model
    holds it.
    """
    poison = ATTACKS.get(attack).poison
    if poison is None:
        return dict(trained)
    floating = [k for k, v in trained.items() if np.issubdtype(v.dtype, np.floating)]
    received = {
        k: np.asarray(sent[k]).astype(trained[k].dtype).astype(np.float64) for k in floating
    }
    updates = {k: trained[k].astype(np.float64) - received[k] for k in floating}
    out = dict(trained)
    for key, delta in poison(updates, scale, seed).items():
        out[key] = (received[key] + delta).astype(trained[key].dtype)
    return out
