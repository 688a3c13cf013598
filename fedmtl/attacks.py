"""Malicious clients for robustness experiments: a Flower client mod that only simulation installs.

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

The ClientApp has no attack code path. :func:`attack_mod` wraps it in
simulation (``fedmtl.simulation``): for an attacker's train message it passes
on a Context whose node config names the labels to train on
(:data:`TRAIN_LABELS`, read by the client's data setup through :func:`relabel`),
and rewrites the reply's ``"arrays"`` and ``"task-arrays"`` relative to the
arrays the message brought. A deployed ClientApp never has the mod.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt
from flwr.app import Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedmtl.config import ExperimentConfig
from fedmtl.data import ClientData
from fedmtl.panels import attackers
from fedmtl.records import ARRAYS, TASK_ARRAYS, Instruction, NDArrays, from_record, to_record
from fedmtl.registry import Registry
from fedmtl.training import client_seed

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
    """What an attacker does differently: the labels it trains on, how it poisons its update."""

    train_labels: str = HONEST
    poison: Poison | None = None


#: Attack name (``attack`` in the experiment) -> what the attacking clients do.
ATTACKS: Registry[Attack] = Registry("attack")
ATTACKS.add("none", Attack())
ATTACKS.add("label-flip", Attack(train_labels="flipped"))
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


def attack_mod(cfg: ExperimentConfig) -> Mod:
    """A client mod that makes ``cfg``'s attackers misbehave in every train message.

    Other clients and other messages pass through untouched. The poisoning
    seeds are the attacker's training seed for the round (``+ 1`` for the task
    scope).
    """
    chosen = attackers(cfg)

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        client = context.node_config.get("partition-id")
        if msg.metadata.message_type != MessageType.TRAIN or client not in chosen:
            return call_next(msg, context)
        attack = ATTACKS.get(cfg.attack)
        node_config = {**context.node_config, TRAIN_LABELS: attack.train_labels}
        reply = call_next(msg, dataclasses.replace(context, node_config=node_config))
        if reply.has_error():
            return reply
        round_ = Instruction.from_content(msg.content).server_round
        seed = client_seed(cfg.seed, round_, int(client))
        for offset, key in enumerate((ARRAYS, TASK_ARRAYS)):
            sent, trained = msg.content.array_records.get(key), reply.content.array_records.get(key)
            if sent is not None and trained is not None:
                poisoned = poison_update(
                    cfg.attack,
                    from_record(sent),
                    from_record(trained),
                    cfg.attack_scale,
                    seed + offset,
                )
                reply.content[key] = to_record(poisoned)
        return reply

    return mod
