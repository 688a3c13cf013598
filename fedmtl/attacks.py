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

from flwr.app import Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedmtl.config import ExperimentConfig
from fedmtl.panels import attackers
from fedmtl.poisoning import (
    ATTACKS,
    LABELS,
    TRAIN_LABELS,
    Attack,
    flip_labels,
    poison_update,
    relabel,
)
from fedmtl.records import ARRAYS, TASK_ARRAYS, Instruction, from_record, to_record
from fedmtl.training import client_seed

__all__ = [
    "ATTACKS",
    "LABELS",
    "TRAIN_LABELS",
    "Attack",
    "attack_mod",
    "flip_labels",
    "poison_update",
    "relabel",
]


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
