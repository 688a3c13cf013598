"""Malicious clients: poisoned updates by hand, seeded attackers, the simulation's attack mod."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Context, Message

from fedmtl.attacks import ATTACKS, attack_mod, flip_labels, poison_update
from fedmtl.client_app import handle_evaluate, handle_train, make_client_app
from fedmtl.config import CHOICES, ConfigError, ExperimentConfig, build_config, partition_spec
from fedmtl.data import client_data
from fedmtl.models.state import export_arrays
from fedmtl.panels import attackers
from fedmtl.registry import RegistryError
from fedmtl.run_model import fresh_model, run_scopes
from fedmtl.scopes import keys_in
from fedmtl.training import train_local
from tests.client_helpers import (
    evaluate_message,
    global_arrays,
    node_context,
    reply_arrays,
    round_settings,
    train_message,
    trainable_keys,
)

HONEST = build_config({"num-clients": 3})


def _attacked(cfg: ExperimentConfig, msg: Message, context: Context) -> Message:
    """``msg`` handled as in simulation: through the attack mod, then the ClientApp."""
    handler = handle_train if msg.metadata.message_type == "train" else handle_evaluate

    def call_next(m: Message, c: Context) -> Message:
        return handler(m, c, cfg)

    return attack_mod(cfg)(msg, context, call_next)


SENT = {"w": np.array([1.0, 2.0], np.float32), "n": np.array(5, np.int64)}
TRAINED = {"w": np.array([1.5, 1.0], np.float32), "n": np.array(9, np.int64)}  # u = [0.5, -1]


def test_poisoned_updates_by_hand() -> None:
    flipped = poison_update("sign-flip", SENT, TRAINED, 4.0, 0)
    np.testing.assert_allclose(flipped["w"], [1 - 2.0, 2 + 4.0])  # w - 4u = [-1, 6]
    scaled = poison_update("scale", SENT, TRAINED, 4.0, 0)
    np.testing.assert_allclose(scaled["w"], [1 + 2.0, 2 - 4.0])  # w + 4u = [3, -2]
    noisy = poison_update("noise", SENT, TRAINED, 4.0, 0)
    # a random direction, 4 times as long as u (|u| = sqrt(1.25))
    assert np.linalg.norm(noisy["w"] - SENT["w"]) == pytest.approx(4 * np.sqrt(1.25), rel=1e-5)
    for poisoned in (flipped, scaled, noisy):
        assert poisoned["n"] == 9 and poisoned["w"].dtype == np.float32  # counters untouched
    assert poison_update("label-flip", SENT, TRAINED, 4.0, 0)["w"].tolist() == [1.5, 1.0]


def test_label_flip_maps_every_label_to_another() -> None:
    y = np.arange(10, dtype=np.int64)
    assert flip_labels(y, 10).tolist() == list(range(9, -1, -1))
    assert flip_labels(np.array([0, 1]), 2).tolist() == [1, 0]


def test_attackers_are_a_seeded_fraction() -> None:
    cfg = build_config({"attack": "sign-flip", "attack-fraction": 0.25, "num-clients": 12})
    chosen = attackers(cfg)
    assert len(chosen) == 3 and chosen == attackers(cfg)
    assert attackers(build_config({"attack-fraction": 0.25})) == frozenset()  # attack "none"
    with pytest.raises(ConfigError, match="attack"):
        build_config({"attack": "backdoor"})


def test_attack_kinds_are_a_registry_with_the_configs_choices() -> None:
    assert set(ATTACKS) == set(CHOICES["attack"]) == {
        "none", "label-flip", "sign-flip", "scale", "noise"
    }  # fmt: skip
    assert ATTACKS.get("label-flip").poison is None
    assert ATTACKS.get("label-flip").train_labels == "flipped"
    with pytest.raises(RegistryError, match="did you mean 'sign-flip'"):
        poison_update("sign-flop", SENT, TRAINED, 4.0, 0)


def test_an_attacking_client_sends_the_flipped_update(server_identity: None) -> None:
    # Prepare: every client attacks (fraction 0.99 of 3 -> 3)
    torch.set_num_threads(1)
    attacking = build_config({"num-clients": 3, "attack": "sign-flip", "attack-fraction": 0.99})
    shared, task = global_arrays(HONEST, "digit")
    # Execute
    good = reply_arrays(handle_train(train_message(shared, task), node_context(0), HONEST))
    bad = reply_arrays(_attacked(attacking, train_message(shared, task), node_context(0)))
    unwrapped = reply_arrays(handle_train(train_message(shared, task), node_context(0), attacking))
    # Assert: bad = w - 4 (good - w); the ClientApp alone never attacks
    key = "backbone.conv1.weight"
    expected = shared[key] - 4.0 * (good[key] - shared[key])
    np.testing.assert_allclose(bad[key], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(unwrapped[key], good[key])


def test_a_label_flipping_client_trains_honestly_on_flipped_labels(server_identity: None) -> None:
    # Prepare: the by-hand round 1 of client 0 on flipped labels
    torch.set_num_threads(1)
    cfg = build_config({"num-clients": 3, "attack": "label-flip", "attack-fraction": 0.99})
    shared, task = global_arrays(cfg, "digit")
    data = client_data(partition_spec(cfg), 0)
    model = fresh_model(cfg)
    flipped = flip_labels(data.y_train, 10)
    trainable = trainable_keys(cfg, model, data.task)
    train_local(model, data.task, data.x_train, flipped, round_settings(cfg, 0), trainable)
    expected = export_arrays(model, keys_in(run_scopes(cfg), "shared"))
    context = node_context(0)
    # Execute
    sent = reply_arrays(_attacked(cfg, train_message(shared, task), context))
    evaluated = _attacked(cfg, evaluate_message(shared, task), context)
    # Assert: the update is the flipped-label training's; evaluation uses the true labels
    for key, value in expected.items():
        np.testing.assert_array_equal(sent[key], value, err_msg=key)
    honest = handle_evaluate(evaluate_message(shared, task), context, cfg)
    assert evaluated.content["metrics"]["loss"] == honest.content["metrics"]["loss"]


def test_the_mod_leaves_honest_clients_and_evaluation_alone(server_identity: None) -> None:
    # Prepare: one attacker among 4
    torch.set_num_threads(1)
    cfg = build_config({"num-clients": 4, "attack": "sign-flip", "attack-fraction": 0.25})
    honest = min(set(range(4)) - attackers(cfg))
    attacker = min(attackers(cfg))
    shared, task = global_arrays(cfg, "digit")
    seen: list[Context] = []

    def call_next(msg: Message, context: Context) -> Message:
        seen.append(context)
        return msg  # stands for the reply: what the mod returns unchanged

    mod = attack_mod(cfg)
    # Execute
    message = train_message(shared, task)
    passed = mod(message, node_context(honest), call_next)
    evaluated = mod(evaluate_message(shared, task), node_context(attacker), call_next)
    # Assert: the same messages and contexts, untouched
    assert passed is message
    assert evaluated.metadata.message_type == "evaluate"
    assert [dict(c.node_config) for c in seen] == [
        {"partition-id": honest},
        {"partition-id": attacker},
    ]


def test_a_clientapp_read_from_run_config_refuses_to_attack(server_identity: None) -> None:
    # Prepare: what `flwr run` or a deployment hands the ClientApp
    app = make_client_app()
    shared, task = global_arrays(HONEST, "digit")
    context = node_context(0)
    context.run_config = {"experiment": "digits", "attack": "sign-flip", "attack-fraction": 0.25}
    # Execute / Assert: no attack mod there, so no silent honest run either
    with pytest.raises(ConfigError, match="fedmtl simulate") as caught:
        app(train_message(shared, task), context)
    assert caught.value.key == "attack"


def test_label_flip_is_refused_for_a_regression_task() -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(
            {"tasks": ["digit", "digit-value"], "attack": "label-flip", "attack-fraction": 0.25}
        )
    assert caught.value.key == "attack" and "digit-value" in str(caught.value)
    # An attack on the update applies to every kind.
    build_config(
        {"tasks": ["digit", "digit-value"], "attack": "sign-flip", "attack-fraction": 0.25}
    )
