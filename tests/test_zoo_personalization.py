"""Personalization strategies: scope presets, FedRep's client config, local-only."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord
from flwr.serverapp.strategy import FedAvg

from fedmtl.assembly import resolve_run
from fedmtl.config import ConfigError, build_config
from fedmtl.records import CONFIG, HEAD_EPOCHS, from_record, to_record
from fedmtl.run_model import run_scopes
from fedmtl.scopes import ScopePreset
from strategies import ScopedStrategy, build_strategy, register
from strategies.registry import (
    STRATEGIES,
    Sampling,
    StrategyOptionError,
    strategy_scope_preset,
)
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
    scopes = run_scopes(resolve_run(build_config({"strategy": strategy, "pretrained": "none"})))
    for key, scope in expected.items():
        assert scopes[key] == scope, key


def test_experiment_scopes_win_when_asked() -> None:
    cfg = resolve_run(build_config({"strategy": "lg-fedavg", "scopes-from": "experiment"}))
    assert cfg.scope_local == ("heads.*", "*.num_batches_tracked")
    assert strategy_scope_preset("fedavg") is None
    assert strategy_scope_preset("no-such-strategy") is None


ZOO_PRESETS = ("ditto", "fedbabu", "fedbn", "fedper", "fedrep", "lg-fedavg", "local-only")


def test_every_zoo_preset_is_a_typed_scope_preset() -> None:
    presets = {name: strategy_scope_preset(name) for name in STRATEGIES.names()}
    with_preset = sorted(name for name, preset in presets.items() if preset is not None)
    assert with_preset == list(ZOO_PRESETS)
    assert all(isinstance(presets[name], ScopePreset) for name in ZOO_PRESETS)


class _Misspelled(FedAvg):
    scope_preset = {"lokal": ("heads.*",), "shared": ("backbone.*",)}  # noqa: RUF012


class _PlainTable(FedAvg):
    scope_preset = {"local": ("heads.*",), "shared": ("backbone.*",)}  # noqa: RUF012


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test are dropped afterwards."""
    monkeypatch.setattr(STRATEGIES, "_items", dict(STRATEGIES._items))


def test_registering_a_misspelled_preset_names_the_strategy_and_the_key(
    scratch_registry: None,
) -> None:
    # Execute
    with pytest.raises(StrategyOptionError) as info:
        register("lokal-test")(_Misspelled)

    # Assert
    message = str(info.value)
    assert "strategy 'lokal-test'" in message
    assert "'lokal' is not a scope field (did you mean 'local'?)" in message
    assert "lokal-test" not in STRATEGIES


def test_a_preset_must_be_a_scope_preset_not_a_table(scratch_registry: None) -> None:
    with pytest.raises(
        StrategyOptionError, match=r"must be a fedmtl\.scopes\.ScopePreset, got a dict"
    ):
        STRATEGIES.add("table-test", _PlainTable)
    assert "table-test" not in STRATEGIES


def test_an_imported_strategy_with_a_bad_preset_fails_as_a_config_error() -> None:
    # Execute
    with pytest.raises(ConfigError) as info:
        resolve_run(build_config({"strategy": "tests.test_zoo_personalization:_Misspelled"}))

    # Assert
    assert info.value.key == "strategy"
    assert "'lokal' is not a scope field" in str(info.value)


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
