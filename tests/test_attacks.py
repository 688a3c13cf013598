"""Malicious clients: poisoned updates by hand, seeded attackers, the client applies them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmtl.attacks import flip_labels, poison_update
from fedmtl.client_app import handle_train
from fedmtl.config import ConfigError, build_config
from fedmtl.panels import attackers
from tests.client_helpers import global_arrays, node_context, reply_arrays, train_message

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


def test_an_attacking_client_sends_the_flipped_update(server_identity: None) -> None:
    # Prepare: every client attacks (fraction 0.99 of 3 -> 3)
    torch.set_num_threads(1)
    honest = build_config({"num-clients": 3})
    attacking = build_config({"num-clients": 3, "attack": "sign-flip", "attack-fraction": 0.99})
    shared, task = global_arrays(honest, "digit")
    # Execute
    good = reply_arrays(handle_train(train_message(shared, task), node_context(0), honest))
    bad = reply_arrays(handle_train(train_message(shared, task), node_context(0), attacking))
    # Assert: bad = w - 4 (good - w)
    key = "backbone.conv1.weight"
    expected = shared[key] - 4.0 * (good[key] - shared[key])
    np.testing.assert_allclose(bad[key], expected, rtol=1e-5, atol=1e-6)
