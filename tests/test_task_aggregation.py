"""Task-group aggregation rules (strategies.task_rules): hand computations, Flower parity."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from flwr.serverapp.strategy import Bulyan, FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum

from fedmtl.config import ConfigError, build_config
from fedmtl.config.parsing import CHOICES
from fedmtl.records import from_record
from strategies import available_strategies
from strategies.registry import build_strategy
from strategies.replies import strip_reply
from strategies.scoped import ScopedOptions, ScopedStrategy
from strategies.task_rules import (
    TASK_RULES,
    auto_rule_name,
    task_rule,
    task_rule_names,
)
from strategies.testing import check_task_scope_robust, server_identity, train_reply
from strategies.testing.traits import ROBUST, traits_of


def _scalars(*values: float) -> list[dict[str, Any]]:
    return [{"w": np.array([v], dtype=np.float32)} for v in values]


def test_the_configs_choices_are_the_registry() -> None:
    assert list(CHOICES["task-aggregation"]) == task_rule_names()
    assert task_rule_names()[0] == "auto" and "auto" not in TASK_RULES


def test_the_config_key_defaults_to_auto_and_names_itself_on_a_typo() -> None:
    assert build_config({}).task_aggregation == "auto"
    assert build_config({"task-aggregation": "median"}).task_aggregation == "median"
    with pytest.raises(ConfigError, match="task-aggregation"):
        build_config({"task-aggregation": "medain"})


@pytest.mark.parametrize("name", available_strategies())
def test_auto_follows_the_strategy_and_is_the_mean_for_non_robust_ones(name: str) -> None:
    inner = build_strategy(name)
    want = {
        "fedmedian": "median",
        "fedtrimmedavg": "trimmed-mean",
        "krum": "krum",
        "multikrum": "multikrum",
        "bulyan": "bulyan",
    }.get(name, "mean")
    assert auto_rule_name(inner) == want
    # every robust strategy gets a robust rule; nothing else changes
    assert (want != "mean") == (ROBUST in traits_of(inner))


def test_a_strategy_class_can_name_its_rule() -> None:
    class Mine(FedAvg):
        task_aggregation = "median"

    class Wrong(FedAvg):
        task_aggregation = "mode"

    class MyKrum(Krum):
        pass

    assert auto_rule_name(Mine()) == "median"
    assert auto_rule_name(MyKrum()) == "krum"  # subclasses follow their parent
    with pytest.raises(ValueError, match=r"Wrong\.task_aggregation = 'mode'"):
        task_rule("auto", Wrong())


def test_hand_computed_rules() -> None:
    five = _scalars(0.0, 0.1, 0.25, 0.45, 50.0)
    weights = [1.0, 1.0, 3.0, 1.0, 1.0]
    assert task_rule("mean", FedAvg())(_scalars(1, 3), [1, 3], "t")["w"] == pytest.approx(2.5)
    assert task_rule("median", FedAvg())(_scalars(1, 2, 10), [1, 1, 1], "t")["w"] == 2.0
    # beta 0.2 of 5: cut one value at each end -> mean(0.1, 0.25, 0.45)
    trimmed = task_rule("trimmed-mean", FedTrimmedAvg(beta=0.2))(five, weights, "t")
    assert trimmed["w"] == pytest.approx(0.8 / 3)
    # Krum, f = 1: sums of squared distances to the n - f - 2 = 2 closest neighbours:
    # 0 -> .01 + .0625, 0.1 -> .01 + .0225, 0.25 -> .0225 + .04, 0.45 -> .04 + .1225
    krum = task_rule("krum", Krum(num_malicious_nodes=1))(five, weights, "t")
    assert krum["w"] == pytest.approx(0.1)
    # MultiKrum selects 0.1 and 0.25, averaged with num-examples 1 and 3
    multi = task_rule("multikrum", MultiKrum(num_malicious_nodes=1, num_nodes_to_select=2))
    assert multi(five, weights, "t")["w"] == pytest.approx((0.1 + 3 * 0.25) / 4)
    assert krum["w"].dtype == np.float32


def _flower(strategy: Any, updates: list[dict[str, Any]], weights: list[float]) -> dict[str, Any]:
    """What ``strategy`` makes of ``updates`` on the shared scope."""
    replies = [
        strip_reply(train_reply(i + 1, "t", w, u), True)
        for i, (u, w) in enumerate(zip(updates, weights, strict=True))
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    return from_record(arrays)


@pytest.mark.parametrize(
    ("strategy", "name"),
    [
        (FedMedian(), "median"),
        (FedTrimmedAvg(beta=0.3), "trimmed-mean"),
        (Krum(num_malicious_nodes=2), "krum"),
        (MultiKrum(num_malicious_nodes=1, num_nodes_to_select=3), "multikrum"),
        (Bulyan(num_malicious_nodes=1), "bulyan"),
    ],
)
def test_each_rule_is_flowers_maths_with_the_strategys_settings(strategy: Any, name: str) -> None:
    rng = np.random.default_rng(3)
    updates = [
        {"a": rng.standard_normal((2, 3)).astype(np.float32), "b": rng.standard_normal(4)}
        for _ in range(8)
    ]
    updates[5] = {k: v * 40 for k, v in updates[5].items()}  # an outlier
    weights = [float(w) for w in rng.integers(1, 9, size=8)]
    with server_identity():
        want = _flower(strategy, updates, weights)
    rule = task_rule("auto", strategy)
    got = rule(updates, weights, "t")
    assert rule.name == name
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-7)
        assert got[key].dtype == updates[0][key].dtype


@pytest.mark.parametrize(
    ("strategy", "needed"), [(Krum(num_malicious_nodes=1), 5), (Bulyan(num_malicious_nodes=1), 7)]
)
def test_small_groups_fall_back_to_the_median_warning_once_per_task(
    strategy: Any, needed: int, caplog: pytest.LogCaptureFixture
) -> None:
    rule = task_rule("auto", strategy)
    few = _scalars(*range(needed - 1))
    with caplog.at_level(logging.DEBUG, logger="strategies.task_rules"):
        for _ in range(2):
            assert rule(few, [1.0] * len(few), "digit")["w"] == np.median(range(needed - 1))
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.WARNING, logging.DEBUG]
    assert f"= {needed} replies, got {needed - 1}" in caplog.records[0].getMessage()
    assert "task 'digit'" in caplog.records[0].getMessage()


def test_bad_settings_and_names_are_refused() -> None:
    with pytest.raises(ValueError, match="beta must be in"):
        task_rule("trimmed-mean", type("S", (FedAvg,), {"beta": float("nan")})())
    with pytest.raises(ValueError, match="num_malicious_nodes must be an int >= 0"):
        task_rule("krum", Krum(num_malicious_nodes=-1))
    with pytest.raises(ValueError, match="num_nodes_to_select must be >= 1"):
        task_rule("multikrum", MultiKrum(num_nodes_to_select=0))
    with pytest.raises(ValueError, match="task_aggregation 'mode'"):
        ScopedOptions(task_aggregation="mode")
    with pytest.raises(ValueError, match="different keys"):
        task_rule("median", FedAvg())([{"a": np.zeros(1)}, {"b": np.zeros(1)}], [1, 1], "t")


def test_the_wrapper_uses_the_chosen_rule() -> None:
    assert ScopedStrategy(FedMedian()).task_rule.name == "median"
    assert ScopedStrategy(FedAvg()).task_rule.name == "mean"
    chosen = ScopedStrategy(FedMedian(), options=ScopedOptions(task_aggregation="mean"))
    assert chosen.task_rule.name == "mean"


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("fedtrimmedavg", {"beta": 0.2}),
        ("krum", {"num-malicious-nodes": 1}),
        ("multikrum", {"num-malicious-nodes": 1, "num-nodes-to-select": 2}),
    ],
)
def test_the_robust_check_holds_with_non_default_settings(
    name: str, options: dict[str, Any]
) -> None:
    check_task_scope_robust(name, options)
