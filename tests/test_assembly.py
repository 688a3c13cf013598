"""Run assembly (:mod:`fedmtl.assembly`): the strategy checked, its scope preset applied."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from fedmtl.assembly import (
    build_inner_strategy,
    experiment_from_run_config,
    load_run,
    resolve_run,
)
from fedmtl.cli import main
from fedmtl.config import ConfigError, build_config, load_experiment
from fedmtl.results import to_toml
from fedmtl.run_model import run_scopes
from strategies.zoo.fedper import PERSONAL_HEADS


@pytest.mark.parametrize(
    ("values", "key", "fragments"),
    [
        ({"strategy": "fedavgg"}, "strategy", ["fedadam", "did you mean 'fedavg'"]),
        ({"strategy": "nosuchpkg.mod:Cls"}, "strategy", ["cannot import"]),
        (
            {"strategy": "fedadam", "strategy-options": {"etta": 0.1}},
            "strategy-options",
            ["no option 'etta'", "did you mean 'eta'"],
        ),
        (
            {"strategy": "fedavg", "strategy-options": {"weighted-by-key": "n"}},
            "strategy-options",
            ["no option 'weighted-by-key'"],
        ),
        ({"strategy": "fedrep", "strategy-options": {"head_epochs": 0}}, "strategy-options", []),
    ],
)
def test_strategy_errors_name_the_key(
    values: dict[str, Any], key: str, fragments: list[str]
) -> None:
    # Prepare: the parser accepts the values; assembly is where the strategy is built.
    cfg = build_config(values)

    # Execute
    with pytest.raises(ConfigError) as info:
        resolve_run(cfg)

    # Assert
    assert info.value.key == key
    for fragment in fragments:
        assert fragment in str(info.value)


def test_cli_refuses_a_bad_strategy_option_before_any_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["simulate", "--set", "strategy=fedadam", "--set", "strategy-options={etta=1}"])
    err = capsys.readouterr().err
    assert status == 2
    assert "config key 'strategy-options'" in err
    assert "did you mean 'eta'" in err


def test_preset_replaces_the_scope_keys_and_is_recorded() -> None:
    # Execute
    cfg = resolve_run(build_config({"strategy": "fedper"}))

    # Assert
    assert cfg.scope_local == PERSONAL_HEADS.local
    assert cfg.scope_shared == PERSONAL_HEADS.shared
    assert cfg.scope_task == ()
    assert cfg.scope_default == "shared"
    assert cfg.scopes_from == "experiment"


def test_preset_frozen_patterns_come_after_the_runs_own() -> None:
    cfg = resolve_run(build_config({"strategy": "fedbabu", "scope-frozen": ["backbone.conv1.*"]}))
    assert cfg.scope_frozen == ("backbone.conv1.*", "heads.*")


def test_experiment_scopes_win_when_asked() -> None:
    # Prepare
    cfg = build_config({"strategy": "lg-fedavg", "scopes-from": "experiment"})

    # Execute / Assert
    assert resolve_run(cfg) == cfg


def test_a_strategy_without_preset_leaves_the_config_alone() -> None:
    cfg = load_experiment("digits")
    assert resolve_run(cfg) == cfg
    assert resolve_run(cfg).scopes_from == "strategy"


@pytest.mark.parametrize("strategy", ["fedper", "fedbabu", "ditto", "lg-fedavg", "fedavg"])
def test_resolution_is_idempotent_and_config_toml_reruns_with_the_same_scopes(
    strategy: str,
) -> None:
    # Prepare: what the run writes as config.toml
    resolved = load_run("digits", {"strategy": strategy})
    written = to_toml(resolved.to_dict())

    # Execute: the same file re-run (``fedmtl simulate <run>/config.toml``)
    rerun = resolve_run(build_config(tomllib.loads(written)))

    # Assert
    assert resolve_run(resolved) == resolved
    assert rerun == resolved
    assert run_scopes(rerun) == run_scopes(resolved)


def test_server_and_client_read_the_same_run_from_run_config() -> None:
    # Prepare: what ``flwr run`` hands both apps
    run_config = {"experiment": "digits", "overrides": "strategy=fedbn num-rounds=2"}

    # Execute
    server_side = experiment_from_run_config(run_config)
    client_side = experiment_from_run_config(dict(run_config))

    # Assert
    assert server_side == client_side
    assert server_side.scope_task == ("heads.*",)
    assert server_side.scopes_from == "experiment"
    assert server_side.num_rounds == 2


def test_inner_strategy_gets_its_options_and_the_runs_sampling() -> None:
    # Prepare
    cfg = build_config(
        {
            "strategy": "fedadam",
            "strategy-options": {"eta": 0.2},
            "fraction-train": 0.5,
            "holdout-clients": 2,
        }
    )

    # Execute
    strategy = build_inner_strategy(cfg)

    # Assert
    assert strategy.eta == 0.2  # type: ignore[attr-defined]
    assert strategy.fraction_train == 0.5  # type: ignore[attr-defined]
    assert strategy.min_available_nodes == 10  # type: ignore[attr-defined]
