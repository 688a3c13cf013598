"""Personalization strategies: scope presets, FedRep's client config, local-only."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord

from fedmtl.config import build_config
from fedmtl.records import CONFIG, HEAD_EPOCHS, from_record, to_record
from fedmtl.run_model import run_scopes
from strategies import ScopedStrategy, build_strategy
from strategies.registry import Sampling, StrategyOptionError, strategy_scope_preset
from strategies.scoped import spec_of
from tests.factories import FakeGrid, train_reply


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        # digits-cnn: conv1/bn1/conv2/bn2/proj + heads
        ("fedper", {"backbone.conv1.weight": "shared", "backbone.bn1.weight": "shared",
                    "heads.digit.weight": "local"}),
        ("fedrep", {"backbone.proj.weight": "shared", "heads.digit.weight": "local"}),
        ("lg-fedavg", {"backbone.conv1.weight": "local", "heads.digit.weight": "task"}),
        ("fedbn", {"backbone.conv1.weight": "shared", "backbone.bn1.weight": "local",
                   "backbone.bn2.running_mean": "local", "heads.digit.weight": "task"}),
        ("local-only", {"backbone.conv1.weight": "local", "heads.digit.weight": "local"}),
    ],
)  # fmt: skip
def test_presets_decide_the_scopes(strategy: str, expected: dict[str, str]) -> None:
    scopes = run_scopes(build_config({"strategy": strategy, "pretrained": "none"}))
    for key, scope in expected.items():
        assert scopes[key] == scope, key


def test_experiment_scopes_win_when_asked() -> None:
    cfg = build_config({"strategy": "lg-fedavg", "scopes-from": "experiment"})
    assert cfg.scope_local == ("heads.*", "*.num_batches_tracked")
    assert strategy_scope_preset("fedavg") is None
    assert strategy_scope_preset("no-such-strategy") is None


def test_fedrep_sends_head_epochs_and_checks_them(server_identity: None) -> None:
    # Prepare
    inner = build_strategy("fedrep", {"head_epochs": 3}, Sampling(min_available_nodes=1))
    strategy = ScopedStrategy(inner, task_arrays={})
    arrays = to_record({"backbone.w": np.zeros(2, dtype=np.float32)})
    # Execute
    messages = list(strategy.configure_train(1, arrays, ConfigRecord({}), FakeGrid({1: "a"})))  # type: ignore[arg-type]
    # Assert
    assert [int(m.content.config_records[CONFIG][HEAD_EPOCHS]) for m in messages] == [3]
    with pytest.raises(StrategyOptionError, match="head_epochs"):
        build_strategy("fedrep", {"head_epochs": 0})


def test_local_only_never_changes_the_global_arrays(server_identity: None) -> None:
    # Prepare
    inner = build_strategy("local-only", {}, Sampling(min_available_nodes=1))
    strategy = ScopedStrategy(inner, task_arrays={})
    start = {"backbone.w": np.zeros(2, dtype=np.float32)}
    strategy._shared_spec = spec_of(start)
    list(
        strategy.configure_train(1, to_record(start), ConfigRecord({}), FakeGrid({1: "a", 2: "b"}))
    )  # type: ignore[arg-type]
    replies = [
        train_reply(1, "a", 4, {"backbone.w": np.ones(2, dtype=np.float32)}, loss=1.0),
        train_reply(2, "b", 4, {"backbone.w": np.full(2, 3.0, dtype=np.float32)}, loss=3.0),
    ]
    # Execute
    arrays, metrics = strategy.aggregate_train(1, replies)
    # Assert
    assert arrays is not None and metrics is not None
    np.testing.assert_array_equal(from_record(arrays)["backbone.w"], [0.0, 0.0])
    assert metrics["loss"] == pytest.approx(2.0)
