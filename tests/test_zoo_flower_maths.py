"""Flower's eleven stock strategies, as fedmtl uses them, checked against hand-computed numbers.

Each test builds the real Flower strategy through :func:`strategies.build_strategy`
(so option names and the injected sampling arguments are the ones an experiment
file gets), wraps it in :class:`strategies.ScopedStrategy` without a task scope,
and plays ``configure_train`` / ``aggregate_train`` rounds with fake replies from
:mod:`tests.factories`. The expected arrays are derived by hand in the comments
from the formulas in Flower 1.41's source (``flwr/serverapp/strategy/*.py``);
no Flower helper is used to compute an expected value.

Notes
-----
Facts about Flower 1.41 these tests pin down (a change upstream makes them fail):

* ``fedmedian``, ``fedtrimmedavg`` and ``bulyan`` ignore ``num-examples`` when
  aggregating arrays (they still weight the metrics); ``krum`` / ``multikrum``
  weight the *selected* replies by ``num-examples``.
* ``fedadam`` corrects the bias with ``sqrt(1 - beta_2**(t+1)) / (1 - beta_1**(t+1))``
  where ``t`` is the server round, i.e. one step later than Kingma & Ba, and
  Reddi et al.'s FedAdam has no bias correction at all; ``fedyogi`` and
  ``fedadagrad`` have none. ``fedadagrad`` fixes ``beta_1 = 0`` (no momentum)
  and starts from ``v = 0`` rather than ``tau**2``.
* ``eta_l`` is accepted by the FedOpt family but never used by the server.
* ``fedavgm``'s first momentum buffer is the pseudo-gradient itself (PyTorch SGD
  convention), not ``(1 - beta)`` times it.
* ``fedtrimmedavg`` cuts ``int(beta * n)`` replies from each tail: with
  ``beta * n < 1`` it trims nothing and returns the *unweighted* mean.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from fedmtl.records import from_record, to_record
from strategies import ScopedStrategy, build_strategy
from strategies.registry import Sampling, StrategyOptionError
from tests.factories import FakeGrid, train_reply

KEY = "backbone.w"
F32 = np.float32
RTOL = 1e-6


class Client(NamedTuple):
    """One client's train reply: node id, ``num-examples``, shared weights, loss."""

    node: int
    n: float
    w: Sequence[float]
    loss: float = 0.5


@pytest.fixture(autouse=True)
def _identity_and_seed(server_identity: None) -> None:
    random.seed(0)  # FedAvg samples nodes with the random module


def _record(values: Sequence[float]) -> ArrayRecord:
    return to_record({KEY: np.asarray(values, dtype=F32)})


def _scoped(name: str, options: Mapping[str, Any], num_nodes: int) -> ScopedStrategy:
    inner = build_strategy(name, options, Sampling(min_available_nodes=num_nodes))
    return ScopedStrategy(inner, task_arrays={})


def _play(
    strategy: ScopedStrategy,
    server_round: int,
    current: ArrayRecord,
    clients: Sequence[Client],
) -> tuple[ArrayRecord | None, MetricRecord | None, list[Message]]:
    """One round: configure (all nodes sampled), then aggregate the clients' replies."""
    grid = cast(Grid, FakeGrid({c.node: "a" for c in clients}))
    messages = list(strategy.configure_train(server_round, current, ConfigRecord({}), grid))
    replies = [
        train_reply(c.node, "a", c.n, {KEY: np.asarray(c.w, dtype=F32)}, loss=c.loss)
        for c in clients
    ]
    arrays, metrics = strategy.aggregate_train(server_round, replies)
    return arrays, metrics, messages


def _weights(arrays: ArrayRecord | None) -> npt.NDArray[np.float64]:
    assert arrays is not None
    w = from_record(arrays)[KEY]
    assert w.dtype == F32  # the wrapper hands back the dtype it sent
    return w.astype(np.float64)  # exact: float32 values are float64 values


def _loss(metrics: MetricRecord | None) -> float:
    assert metrics is not None
    value = metrics["loss"]
    assert isinstance(value, float)
    return value


# ------------------------------------------------------------------ averaging
def test_fedavg_weights_arrays_and_loss_by_num_examples() -> None:
    # Prepare: n = 1, 3, 4 (total 8)
    #   x: (1*1 + 3*5 + 4*9) / 8 = 52/8 = 6.5
    #   y: (1*2 + 3*6 + 4*10) / 8 = 60/8 = 7.5
    #   z: (1*3 + 3*7 + 4*11) / 8 = 68/8 = 8.5
    #   loss: (1*0.2 + 3*0.6 + 4*1.0) / 8 = 6/8 = 0.75
    strategy = _scoped("fedavg", {}, 3)
    clients = [
        Client(1, 1, [1.0, 2.0, 3.0], loss=0.2),
        Client(2, 3, [5.0, 6.0, 7.0], loss=0.6),
        Client(3, 4, [9.0, 10.0, 11.0], loss=1.0),
    ]
    # Execute
    arrays, metrics, messages = _play(strategy, 1, _record([0.0, 0.0, 0.0]), clients)
    # Assert
    assert len(messages) == 3
    np.testing.assert_allclose(_weights(arrays), [6.5, 7.5, 8.5], rtol=RTOL)
    assert _loss(metrics) == pytest.approx(0.75, rel=RTOL)


def test_fedprox_sends_proximal_mu_and_averages_like_fedavg() -> None:
    # Prepare: the server side of FedProx is FedAvg; n = 2, 6 (total 8)
    #   x: (2*1 + 6*3) / 8 = 20/8 = 2.5
    #   y: (2*(-1) + 6*7) / 8 = 40/8 = 5.0
    strategy = _scoped("fedprox", {"proximal-mu": 0.25}, 2)
    clients = [Client(1, 2, [1.0, -1.0]), Client(2, 6, [3.0, 7.0])]
    # Execute
    arrays, _, messages = _play(strategy, 1, _record([0.0, 0.0]), clients)
    # Assert: every node is told mu (and the round) in its "config" record
    assert sorted(m.metadata.dst_node_id for m in messages) == [1, 2]
    for message in messages:
        config = message.content.config_records["config"]
        assert config["proximal-mu"] == 0.25
        assert config["server-round"] == 1
    np.testing.assert_allclose(_weights(arrays), [2.5, 5.0], rtol=RTOL)


def test_fedavgm_momentum_carries_over_two_rounds() -> None:
    # Prepare: server_learning_rate = 0.5, server_momentum = 0.9, x0 = [2, 4]
    # Round 1: avg = (1*[0, 0] + 3*[4, 8]) / 4 = [3, 6]
    #   pseudo-gradient g1 = x0 - avg = [-1, -2]; first buffer m1 = g1 = [-1, -2]
    #   x1 = x0 - 0.5*m1 = [2.5, 5.0]
    # Round 2: avg = (2*[0.5, 1] + 2*[0.5, 3]) / 4 = [0.5, 2]
    #   g2 = x1 - avg = [2, 3]; m2 = 0.9*m1 + g2 = [-0.9 + 2, -1.8 + 3] = [1.1, 1.2]
    #   x2 = x1 - 0.5*m2 = [2.5 - 0.55, 5.0 - 0.6] = [1.95, 4.4]   (FedAvg: [0.5, 2])
    strategy = _scoped("fedavgm", {"server-learning-rate": 0.5, "server-momentum": 0.9}, 2)
    # Execute
    x1, _, _ = _play(
        strategy, 1, _record([2.0, 4.0]), [Client(1, 1, [0.0, 0.0]), Client(2, 3, [4.0, 8.0])]
    )
    assert x1 is not None
    x2, _, _ = _play(strategy, 2, x1, [Client(1, 2, [0.5, 1.0]), Client(2, 2, [0.5, 3.0])])
    # Assert
    np.testing.assert_allclose(_weights(x1), [2.5, 5.0], rtol=RTOL)
    np.testing.assert_allclose(_weights(x2), [1.95, 4.4], rtol=RTOL)


# ------------------------------------------------------------------ adaptive (FedOpt family)
# Round 1 of all three: x0 = [1, 2]; avg = (1*[1, 4] + 3*[5, 0]) / 4 = [4, 1]; d1 = [3, -1].
X0 = [1.0, 2.0]
ROUND1 = [Client(1, 1, [1.0, 4.0]), Client(2, 3, [5.0, 0.0])]


def test_fedadam_bias_corrected_update_over_two_rounds() -> None:
    # Prepare: eta = 0.1, beta_1 = 0.6, beta_2 = 0.96, tau = 0.2, eta_l = 0.3 (unused).
    # Flower: m = b1*m + (1-b1)*d;  v = b2*v + (1-b2)*d^2;
    #         x = x_prev + eta_t * m / (sqrt(v) + tau),
    #         eta_t = eta * sqrt(1 - b2^(t+1)) / (1 - b1^(t+1))   (t = server round)
    # Round 1: m1 = 0.4*[3, -1] = [1.2, -0.4];  v1 = 0.04*[9, 1] = [0.36, 0.04]
    #   sqrt(v1) + tau = [0.6 + 0.2, 0.2 + 0.2] = [0.8, 0.4];  m1 / that = [1.5, -1.0]
    #   eta_1 = 0.1 * sqrt(1 - 0.96^2) / (1 - 0.6^2) = 0.1 * sqrt(0.0784) / 0.64
    #         = 0.1 * 0.28 / 0.64 = 0.04375
    #   x1 = [1 + 0.04375*1.5, 2 - 0.04375] = [1.065625, 1.95625]
    #   (Kingma & Ba's t=1 correction would give eta_1 = 0.1*0.2/0.4 = 0.05 -> [1.075, 1.95];
    #    Reddi et al. without correction: [1.15, 1.9].)
    strategy = _scoped(
        "fedadam", {"eta": 0.1, "eta-l": 0.3, "beta-1": 0.6, "beta-2": 0.96, "tau": 0.2}, 2
    )
    # Round 2: avg = (1*[2, -1] + 1*[4, 1]) / 2 = [3, 0]
    #   d2 = [3 - 1.065625, 0 - 1.95625] = [1.934375, -1.95625]
    #   m2 = 0.6*[1.2, -0.4] + 0.4*d2 = [0.72 + 0.77375, -0.24 - 0.7825] = [1.49375, -1.0225]
    #   d2^2 = [3.741806640625, 3.8269140625]
    #   v2 = 0.96*[0.36, 0.04] + 0.04*d2^2 = [0.3456 + 0.149672265625, 0.0384 + 0.1530765625]
    #      = [0.495272265625, 0.1914765625]
    #   eta_2 = 0.1 * sqrt(1 - 0.96^3) / (1 - 0.6^3) = 0.1 * sqrt(0.115264) / 0.784
    #   x2 = x1 + eta_2 * m2 / (sqrt(v2) + 0.2)
    eta_2 = 0.1 * math.sqrt(0.115264) / 0.784
    m2 = np.array([1.49375, -1.0225])
    v2 = np.array([0.495272265625, 0.1914765625])
    expected_x2 = np.array([1.065625, 1.95625]) + eta_2 * m2 / (np.sqrt(v2) + 0.2)
    # Execute
    x1, _, _ = _play(strategy, 1, _record(X0), ROUND1)
    assert x1 is not None
    x2, _, _ = _play(strategy, 2, x1, [Client(1, 1, [2.0, -1.0]), Client(2, 1, [4.0, 1.0])])
    # Assert
    np.testing.assert_allclose(_weights(x1), [1.065625, 1.95625], rtol=RTOL)
    np.testing.assert_allclose(_weights(x2), expected_x2, rtol=RTOL)


def test_fedyogi_second_moment_moves_by_sign_over_two_rounds() -> None:
    # Prepare: eta = 0.1, beta_1 = 0.5, beta_2 = 0.75, tau = 0.5, eta_l = 0.3 (unused).
    # Flower: m = b1*m + (1-b1)*d;  v = v - (1-b2) * d^2 * sign(v - d^2);
    #         x = x_prev + eta * m / (sqrt(v) + tau)      (no bias correction)
    # Round 1: m1 = 0.5*[3, -1] = [1.5, -0.5]
    #   v0 = 0 so sign(0 - d1^2) = -1:  v1 = 0.25*[9, 1] = [2.25, 0.25], sqrt = [1.5, 0.5]
    #   x1 = [1 + 0.1*1.5/(1.5 + 0.5), 2 + 0.1*(-0.5)/(0.5 + 0.5)] = [1.075, 1.95]
    # Round 2: avg = ([2.0, 4.0] + [2.15, 3.9]) / 2 = [2.075, 3.95];  d2 = [1, 2]
    #   m2 = 0.5*[1.5, -0.5] + 0.5*[1, 2] = [1.25, 0.75]
    #   x: v1 - d^2 = 2.25 - 1 > 0 -> v shrinks: 2.25 - 0.25*1 = 2.0
    #   y: v1 - d^2 = 0.25 - 4 < 0 -> v grows:   0.25 + 0.25*4 = 1.25
    #   (Adam would give v2 = 0.75*2.25 + 0.25*1 = 1.9375 for x.)
    #   x2 = [1.075 + 0.1*1.25/(sqrt(2) + 0.5), 1.95 + 0.1*0.75/(sqrt(1.25) + 0.5)]
    #      ~ [1.075 + 0.0653016, 1.95 + 0.0463525]
    strategy = _scoped(
        "fedyogi", {"eta": 0.1, "eta-l": 0.3, "beta-1": 0.5, "beta-2": 0.75, "tau": 0.5}, 2
    )
    expected_x2 = [
        1.075 + 0.1 * 1.25 / (math.sqrt(2.0) + 0.5),
        1.95 + 0.1 * 0.75 / (math.sqrt(1.25) + 0.5),
    ]
    # Execute
    x1, _, _ = _play(strategy, 1, _record(X0), ROUND1)
    assert x1 is not None
    x2, _, _ = _play(strategy, 2, x1, [Client(1, 1, [2.0, 4.0]), Client(2, 1, [2.15, 3.9])])
    # Assert
    np.testing.assert_allclose(_weights(x1), [1.075, 1.95], rtol=RTOL)
    np.testing.assert_allclose(_weights(x2), expected_x2, rtol=RTOL)


def test_fedadagrad_accumulates_squares_without_momentum() -> None:
    # Prepare: eta = 0.1, tau = 1.0, eta_l = 0.3 (unused); beta_1 is fixed to 0, so m = d.
    # Flower: v = v + d^2;  x = x_prev + eta * d / (sqrt(v) + tau)
    # Round 1: v1 = [9, 1], sqrt = [3, 1]
    #   x1 = [1 + 0.1*3/(3 + 1), 2 + 0.1*(-1)/(1 + 1)] = [1.075, 1.95]
    # Round 2: avg = ([4.075, 3.7] + [6.075, 1.7]) / 2 = [5.075, 2.7];  d2 = [4, 0.75]
    #   v2 = [9 + 16, 1 + 0.5625] = [25, 1.5625], sqrt = [5, 1.25]
    #   x2 = [1.075 + 0.1*4/(5 + 1), 1.95 + 0.1*0.75/(1.25 + 1)]
    #      = [1.075 + 1/15, 1.95 + 1/30]
    strategy = _scoped("fedadagrad", {"eta": 0.1, "eta-l": 0.3, "tau": 1.0}, 2)
    # Execute
    x1, _, _ = _play(strategy, 1, _record(X0), ROUND1)
    assert x1 is not None
    x2, _, _ = _play(strategy, 2, x1, [Client(1, 1, [4.075, 3.7]), Client(2, 1, [6.075, 1.7])])
    # Assert
    np.testing.assert_allclose(_weights(x1), [1.075, 1.95], rtol=RTOL)
    np.testing.assert_allclose(_weights(x2), [1.075 + 1 / 15, 1.95 + 1 / 30], rtol=RTOL)


def test_fedadagrad_rejects_a_momentum_option() -> None:
    with pytest.raises(StrategyOptionError, match="no option 'beta-1'"):
        _scoped("fedadagrad", {"beta-1": 0.9}, 2)


# ------------------------------------------------------------------ robust aggregation
def test_fedmedian_takes_the_unweighted_coordinate_median() -> None:
    # Prepare: 4 replies (even count: mean of the two middle values); n = 1, 100, 1, 1
    # is ignored for the arrays.
    #   x: sorted [1, 2, 4, 100]      -> (2 + 4) / 2 = 3
    #   y: sorted [10, 20, 30, 40]    -> (20 + 30) / 2 = 25
    #   z: sorted [-100, -3, -2, -1]  -> (-3 + -2) / 2 = -2.5
    strategy = _scoped("fedmedian", {}, 4)
    clients = [
        Client(1, 1, [1.0, 10.0, -1.0]),
        Client(2, 100, [2.0, 20.0, -2.0]),
        Client(3, 1, [4.0, 40.0, -3.0]),
        Client(4, 1, [100.0, 30.0, -100.0]),
    ]
    # Execute
    arrays, _, _ = _play(strategy, 1, _record([0.0, 0.0, 0.0]), clients)
    # Assert
    np.testing.assert_allclose(_weights(arrays), [3.0, 25.0, -2.5], rtol=RTOL)


TRIM_CLIENTS = [
    Client(1, 1, [1.0, 50.0]),
    Client(2, 2, [2.0, 10.0]),
    Client(3, 3, [3.0, 20.0]),
    Client(4, 4, [100.0, 30.0]),
    Client(5, 1000, [-50.0, 40.0]),
]


def test_fedtrimmedavg_cuts_each_tail_then_takes_the_plain_mean() -> None:
    # Prepare: beta = 0.2, 5 replies -> int(0.2*5) = 1 value cut from each tail per
    # coordinate, then an unweighted mean (n = 1000 for client 5 does not matter).
    #   x: sorted [-50, 1, 2, 3, 100] -> (1 + 2 + 3) / 3 = 2
    #   y: sorted [10, 20, 30, 40, 50] -> (20 + 30 + 40) / 3 = 30
    strategy = _scoped("fedtrimmedavg", {"beta": 0.2}, 5)
    # Execute
    arrays, _, _ = _play(strategy, 1, _record([0.0, 0.0]), TRIM_CLIENTS)
    # Assert
    np.testing.assert_allclose(_weights(arrays), [2.0, 30.0], rtol=RTOL)


def test_fedtrimmedavg_with_beta_below_one_reply_trims_nothing() -> None:
    # Prepare: beta = 0.1, 5 replies -> int(0.5) = 0 cut: the unweighted mean of all
    #   x: (1 + 2 + 3 + 100 - 50) / 5 = 56/5 = 11.2
    #   y: (50 + 10 + 20 + 30 + 40) / 5 = 150/5 = 30
    strategy = _scoped("fedtrimmedavg", {"beta": 0.1}, 5)
    # Execute
    arrays, _, _ = _play(strategy, 1, _record([0.0, 0.0]), TRIM_CLIENTS)
    # Assert
    np.testing.assert_allclose(_weights(arrays), [11.2, 30.0], rtol=RTOL)


# Krum / MultiKrum: 5 replies, f = 1 -> each score sums the n - f - 2 = 2 smallest
# squared distances to the others. Points A..E = nodes 1..5:
#   A [1, 0], B [2, 1], C [3, 1], D [5, 2], E [20, -20] (outlier claiming n = 100)
# Squared distances:
#   AB 1+1=2   AC 4+1=5   AD 16+4=20   AE 361+400=761
#   BC 1+0=1   BD 9+1=10  BE 324+441=765
#   CD 4+1=5   CE 289+441=730
#   DE 225+484=709
# Scores: A 2+5=7, B 1+2=3, C 1+5=6, D 5+10=15, E 709+730=1439
KRUM_CLIENTS = [
    Client(1, 1, [1.0, 0.0], loss=0.1),
    Client(2, 2, [2.0, 1.0], loss=0.2),
    Client(3, 1, [3.0, 1.0], loss=0.4),
    Client(4, 4, [5.0, 2.0], loss=0.8),
    Client(5, 100, [20.0, -20.0], loss=9.0),
]


def test_krum_returns_the_single_lowest_score_reply() -> None:
    # Prepare: lowest score is B (3) -> the result is B's weights and B's loss.
    strategy = _scoped("krum", {"num-malicious-nodes": 1}, 5)
    # Execute
    arrays, metrics, _ = _play(strategy, 1, _record([0.0, 0.0]), KRUM_CLIENTS)
    # Assert
    np.testing.assert_allclose(_weights(arrays), [2.0, 1.0], rtol=RTOL)
    assert _loss(metrics) == pytest.approx(0.2, rel=RTOL)


def test_multikrum_averages_the_selected_replies_by_num_examples() -> None:
    # Prepare: 3 lowest scores are B (3), C (6), A (7), with n = 2, 1, 1 (total 4):
    #   x: (1*1 + 2*2 + 1*3) / 4 = 8/4 = 2
    #   y: (1*0 + 2*1 + 1*1) / 4 = 3/4 = 0.75
    #   loss: (1*0.1 + 2*0.2 + 1*0.4) / 4 = 0.9/4 = 0.225
    strategy = _scoped("multikrum", {"num-malicious-nodes": 1, "num-nodes-to-select": 3}, 5)
    # Execute
    arrays, metrics, _ = _play(strategy, 1, _record([0.0, 0.0]), KRUM_CLIENTS)
    # Assert
    np.testing.assert_allclose(_weights(arrays), [2.0, 0.75], rtol=RTOL)
    assert _loss(metrics) == pytest.approx(0.225, rel=RTOL)


# Bulyan, f = 1: needs n >= 4f + 3 = 7 replies; selects theta = n - 2f = 5 by
# MultiKrum (scores over n - f - 2 = 4 nearest), then per coordinate averages the
# beta = theta - 2f = 3 values closest to the median of the 5 (unweighted).
# Honest h1..h5 = nodes 1..5, outliers o1, o2 = nodes 6, 7:
#   h1 [0, 9], h2 [2, 0], h3 [3, 3], h4 [5, 1], h5 [6, 4], o1 [100, 100], o2 [-100, 100]
# Honest squared distances:
#   h1h2 4+81=85  h1h3 9+36=45  h1h4 25+64=89  h1h5 36+25=61
#   h2h3 1+9=10   h2h4 9+1=10   h2h5 16+16=32
#   h3h4 4+4=8    h3h5 9+1=10
#   h4h5 1+9=10
# Scores: h1 85+45+89+61=280, h2 85+10+10+32=137, h3 45+10+8+10=73,
#   h4 89+10+8+10=117, h5 61+32+10+10=113;
#   o1: to h1..h5 = 18281, 19604, 18818, 18826, 18052 -> 4 smallest sum 73977
#   o2: to h1..h5 = 18281, 20404, 20018, 20826, 20452 -> 4 smallest sum 79155
#   -> the 5 honest replies are selected.
BULYAN_CLIENTS = [
    Client(1, 1, [0.0, 9.0]),
    Client(2, 2, [2.0, 0.0]),
    Client(3, 3, [3.0, 3.0]),
    Client(4, 4, [5.0, 1.0]),
    Client(5, 5, [6.0, 4.0]),
    Client(6, 1000, [100.0, 100.0], loss=5.0),
    Client(7, 1000, [-100.0, 100.0], loss=5.0),
]


def test_bulyan_averages_the_values_closest_to_the_median_of_the_krum_selection() -> None:
    # Prepare:
    #   x of the 5: [0, 2, 3, 5, 6], median 3, |x - 3| = [3, 1, 0, 2, 3]
    #       -> 3 closest: 3, 2, 5 -> (3 + 2 + 5) / 3 = 10/3
    #   y of the 5: [9, 0, 3, 1, 4], median 3, |y - 3| = [6, 3, 0, 2, 1]
    #       -> 3 closest: 3, 4, 1 -> (3 + 4 + 1) / 3 = 8/3
    #   (weighting by n would give x = (2*2 + 3*3 + 4*5) / 9 = 33/9 = 11/3 instead)
    #   loss: only honest replies (all 0.5) are averaged -> 0.5
    strategy = _scoped("bulyan", {"num-malicious-nodes": 1}, 7)
    # Execute
    arrays, metrics, _ = _play(strategy, 1, _record([0.0, 0.0]), BULYAN_CLIENTS)
    # Assert
    np.testing.assert_allclose(_weights(arrays), [10 / 3, 8 / 3], rtol=RTOL)
    assert _loss(metrics) == pytest.approx(0.5, rel=RTOL)


def test_bulyan_skips_the_round_with_fewer_than_4f_plus_3_replies() -> None:
    # Prepare: f = 1 needs 7 replies; 6 arrive -> Flower returns no arrays.
    strategy = _scoped("bulyan", {"num-malicious-nodes": 1}, 6)
    # Execute
    arrays, _, _ = _play(strategy, 1, _record([0.0, 0.0]), BULYAN_CLIENTS[:6])
    # Assert
    assert arrays is None
