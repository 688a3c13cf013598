"""Tests for :mod:`fedmtl.config` (a pure parser) and the CLI's handling of bad configuration.

What needs the strategy (its name, options and scope preset) is run assembly's:
see ``tests/test_assembly.py``.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest

from fedmtl.cli import main
from fedmtl.config import (
    EXPERIMENTS_DIR,
    ConfigError,
    ExperimentConfig,
    build_config,
    known_keys,
    load_experiment,
    parse_override,
)
from fedmtl.config.schema import key_of


def test_defaults_load_and_match_dataclass_defaults() -> None:
    # Prepare
    expected = ExperimentConfig()

    # Execute
    cfg = load_experiment()

    # Assert
    assert cfg == expected
    assert cfg.tasks == ("digit", "parity", "ge5")
    assert cfg.num_clients == 12
    assert cfg.strategy == "fedavg"
    assert cfg.expected_clients == 12


def test_load_experiment_reads_simulation_file() -> None:
    # Prepare
    with (EXPERIMENTS_DIR / "digits.toml").open("rb") as fh:
        on_disk = tomllib.load(fh)

    # Execute
    cfg = load_experiment("digits")

    # Assert: every key of the file arrives, coerced to the field's type
    as_dict = cfg.to_dict()
    for key, value in on_disk.items():
        assert as_dict[key] == value, key
    assert cfg.scope_shared == ("backbone.*",)
    assert isinstance(cfg.client_num_cpus, float)


def test_overrides_win_over_the_experiment_file() -> None:
    # Prepare
    overrides = {"num-rounds": 3, "strategy": "fedadam"}

    # Execute
    cfg = load_experiment("digits", overrides)

    # Assert
    assert cfg.num_rounds == 3
    assert cfg.strategy == "fedadam"
    assert cfg.scope_shared == ("backbone.*",)  # still from the file


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("num-rounds=3", "num-rounds", 3),
        ("strategy=fedadam", "strategy", "fedadam"),
        ('tasks=["digit","parity"]', "tasks", ["digit", "parity"]),
        ("strategy-options={eta=0.1}", "strategy-options", {"eta": 0.1}),
        ("learning-rate = 0.01", "learning-rate", 0.01),
        ("output-dir=runs/x", "output-dir", "runs/x"),
    ],
)
def test_parse_override_reads_toml_values(text: str, key: str, value: Any) -> None:
    # Execute
    parsed_key, parsed_value = parse_override(text)

    # Assert
    assert parsed_key == key
    assert parsed_value == value
    assert type(parsed_value) is type(value)


def test_parse_override_without_equals_sign_raises() -> None:
    with pytest.raises(ConfigError) as info:
        parse_override("num-rounds")
    assert info.value.key == "num-rounds"


@pytest.mark.parametrize(
    ("values", "key", "fragments"),
    [
        ({"num-round": 3}, "num-round", ["unknown key", "num-rounds"]),
        ({"num-rounds": "three"}, "num-rounds", ["expected an integer"]),
        ({"num-rounds": 2.5}, "num-rounds", ["expected an integer"]),
        ({"num-rounds": True}, "num-rounds", ["expected an integer"]),
        ({"learning-rate": "fast"}, "learning-rate", ["expected a number"]),
        ({"tasks": [1, 2]}, "tasks", ["list of strings"]),
        ({"strategy-options": 3}, "strategy-options", ["table"]),
        ({"num-rounds": 0}, "num-rounds", [">= 1"]),
        ({"momentum": 1.5}, "momentum", [">= 0.0", "<= 1.0"]),
        ({"dirichlet-alpha": 0.0}, "dirichlet-alpha", ["> 0.0"]),
        ({"test-fraction": 0.95}, "test-fraction", ["<= 0.9"]),
        ({"partitioner": "dirichelt"}, "partitioner", ["iid", "pathological", "'dirichlet'"]),
        ({"optimizer": "rmsprop"}, "optimizer", ["sgd", "adam"]),
        ({"tasks": ["digit", "colour"]}, "tasks", ["colour", "ge5", "mod3", "parity"]),
        ({"tasks": []}, "tasks", ["at least one task"]),
        ({"tasks": ["digit", "digit"]}, "tasks", ["twice"]),
        ({"dataset": "mnist"}, "dataset", ["digits"]),
        ({"num-clients": 2}, "num-clients", ["number of tasks (3)"]),
        ({"min-available-clients": 13}, "min-available-clients", ["num-clients (12)"]),
        ({"dataset-options": {"colour": 1}}, "dataset-options", ["no option 'colour'"]),
        (
            {"dataset": "wordnet-fortunes", "dataset-options": {"fortune-categories": ["x"]}},
            "dataset-options",
            ["'x'", "people"],
        ),
        ({"backbone": "resnet"}, "backbone", ["digits-cnn", "minilm"]),
        ({"backbone": "onnx:model.onnx"}, "backbone", ["scheme 'onnx:'", "hf", "timm"]),
        ({"backbone-options": {"depth": 2}}, "backbone-options", ["no option 'depth'"]),
        (
            {"backbone": "minilm", "backbone-options": {"max-len": 2}},
            "backbone-options",
            ["max-length"],
        ),
        ({"finetune": "partial"}, "finetune", ["last-k", "lora"]),
        ({"finetune-blocks": 0}, "finetune-blocks", [">= 1"]),
        ({"feature-cache": "ram"}, "feature-cache", ["memory", "disk"]),
        ({"lora-dropout": 1.0}, "lora-dropout", ["<= 0.99"]),
    ],
)
def test_bad_values_raise_config_error_naming_key(
    values: dict[str, Any], key: str, fragments: list[str]
) -> None:
    # Execute
    with pytest.raises(ConfigError) as info:
        build_config(values)

    # Assert
    assert info.value.key == key
    message = str(info.value)
    assert f"'{key}'" in message
    for fragment in fragments:
        assert fragment in message


def test_unknown_key_lists_known_keys() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"colour": "red"})
    assert info.value.key == "colour"
    assert all(k in str(info.value) for k in known_keys())


def test_task_counts_must_add_up_to_num_clients() -> None:
    # Prepare
    values = {
        "task-assignment": "counts",
        "task-counts": {"digit": 5, "parity": 4, "ge5": 2},
    }

    # Execute
    with pytest.raises(ConfigError) as info:
        build_config(values)

    # Assert
    assert info.value.key == "task-counts"
    assert "11" in str(info.value) and "12" in str(info.value)


def test_task_counts_naming_unknown_task_is_rejected() -> None:
    values = {"task-assignment": "counts", "task-counts": {"digit": 6, "mod3": 6}}
    with pytest.raises(ConfigError) as info:
        build_config(values)
    assert info.value.key == "task-counts"
    assert "mod3" in str(info.value)


def test_task_counts_that_add_up_are_accepted() -> None:
    cfg = build_config(
        {"task-assignment": "counts", "task-counts": {"digit": 6, "parity": 4, "ge5": 2}}
    )
    assert dict(cfg.task_counts) == {"digit": 6, "parity": 4, "ge5": 2}


def test_non_integer_task_count_raises_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"task-assignment": "counts", "task-counts": {"digit": "12"}})
    assert info.value.key == "task-counts"


def test_invalid_scope_regex_names_the_pattern_key() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"scope-local": ["re:("]})
    assert info.value.key == "scope-local"


def test_invalid_scope_regex_raises_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"scope-local": ["re:("]})
    assert "re:(" in str(info.value)


def test_equal_configs_hash_equal_and_work_as_dict_keys() -> None:
    # Prepare
    values = {
        "num-rounds": 4,
        "strategy": "fedadam",
        "strategy-options": {"eta": 0.1},
        "tasks": ["digit", "parity"],
    }

    # Execute
    first, second = build_config(values), build_config(dict(values))
    other = build_config({**values, "num-rounds": 5})

    # Assert
    assert first == second
    assert hash(first) == hash(second)
    assert {first: "x"}[second] == "x"
    assert first != other
    assert hash(first) != hash(other)


def test_config_is_frozen() -> None:
    # Prepare
    cfg = build_config({"strategy": "fedadam", "strategy-options": {"eta": 0.1}, "task-counts": {}})

    # Execute / Assert
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_rounds = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.strategy_options["eta"] = 1.0  # type: ignore[index]
    assert cfg.strategy_options["eta"] == 0.1


def test_default_mapping_fields_are_read_only() -> None:
    cfg = build_config({})
    with pytest.raises(TypeError):
        cfg.strategy_options["eta"] = 1.0  # type: ignore[index]


def test_to_dict_round_trips_through_build_config() -> None:
    # Prepare
    cfg = load_experiment(
        "digits",
        {
            "strategy": "fedadam",
            "strategy-options": {"eta": 0.1},
            "task-assignment": "counts",
            "task-counts": {"digit": 6, "parity": 3, "ge5": 3},
        },
    )

    # Execute
    as_dict = cfg.to_dict()
    rebuilt = build_config(as_dict)

    # Assert
    assert set(as_dict) == set(known_keys())
    assert isinstance(as_dict["tasks"], list)
    assert isinstance(as_dict["strategy-options"], dict)
    assert rebuilt == cfg
    assert hash(rebuilt) == hash(cfg)
    assert rebuilt.to_dict() == as_dict


def test_cli_bad_set_returns_2_and_names_key(capsys: pytest.CaptureFixture[str]) -> None:
    # Execute
    status = main(["scopes", "digits", "--set", "num-rounds=0"])

    # Assert
    captured = capsys.readouterr()
    assert status == 2
    assert "num-rounds" in captured.err
    assert captured.out == ""


def test_cli_unknown_key_suggests_the_right_one(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["scopes", "--set", "stratgy=fedavg"])
    err = capsys.readouterr().err
    assert status == 2
    assert "stratgy" in err
    assert "did you mean 'strategy'" in err


def test_resolved_config_toml_round_trips() -> None:
    # Prepare
    from fedmtl.results import to_toml

    cfg = load_experiment(
        "digits",
        {"strategy": "fedadam", "strategy-options": {"eta": 0.1}, "scope-task": ["re:x"]},
    )

    # Execute
    reread = build_config(tomllib.loads(to_toml(cfg.to_dict())))

    # Assert
    assert reread == cfg


def test_simulate_subprocess_exits_2_on_bad_value(tmp_path: Path) -> None:
    # The real command line, as a user runs it: nothing starts, status 2, key named.

    result = subprocess.run(
        [sys.executable, "-m", "fedmtl", "simulate", "--set", "partitioner=random"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert "config key 'partitioner'" in result.stderr
    assert "'dirichlet', 'iid', 'natural', 'pathological'" in result.stderr
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- NaN and infinity

FLOAT_KEYS = sorted(
    key_of(name) for name, hint in typing.get_type_hints(ExperimentConfig).items() if hint is float
)


def test_every_float_key_is_covered_by_the_finite_checks() -> None:
    # A float field added later lands in FLOAT_KEYS and is tested below automatically.
    # 16 + input-shift-strength + dwa-temperature + 3 dp-sgd-* + 8 dp-* (client-level DP)
    assert len(FLOAT_KEYS) == 29
    assert {"learning-rate", "max-update-ratio", "dirichlet-alpha"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_every_float_key_rejects_nan_and_infinity(key: str, value: float) -> None:
    # Execute
    with pytest.raises(ConfigError) as info:
        build_config({key: value})

    # Assert
    assert info.value.key == key
    assert "finite" in str(info.value)


@pytest.mark.parametrize(
    "override",
    [
        "learning-rate=nan",
        "learning-rate=inf",
        "momentum=nan",
        "round-timeout-s=nan",
        "attack-scale=nan",
        "max-update-ratio=nan",
        "dirichlet-alpha=nan",
        "client-num-cpus=-inf",
    ],
)
def test_cli_refuses_nan_and_inf_naming_the_key(
    override: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    status = main(["simulate", "--set", override])

    # Assert
    err = capsys.readouterr().err
    key = override.split("=")[0]
    assert status == 2
    assert f"config key '{key}': must be a finite number" in err


@pytest.mark.parametrize(
    ("override", "key", "path"),
    [
        ("strategy-options={eta=nan}", "strategy-options", "'eta' is nan"),
        ("strategy-options={proximal-mu=inf}", "strategy-options", "'proximal-mu' is inf"),
        ("dataset-options={tasks={a={scale=-inf}}}", "dataset-options", "'tasks.a.scale' is -inf"),
        ("backbone-options={sizes=[1.0, nan]}", "backbone-options", "'sizes[1]' is nan"),
    ],
)
def test_cli_refuses_nan_inside_option_tables_naming_key_and_entry(
    override: str, key: str, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    status = main(["simulate", "--set", override])

    # Assert
    err = capsys.readouterr().err
    assert status == 2
    assert f"config key '{key}'" in err
    assert path in err


def test_finite_table_values_are_kept() -> None:
    cfg = build_config({"strategy-options": {"eta": 0.1, "betas": [0.9, 0.99]}})
    assert cfg.strategy_options == {"eta": 0.1, "betas": [0.9, 0.99]}


# ---------------------------------------------------------------- a pure parser


def test_config_imports_no_strategy_code() -> None:
    # The import-linter contract says so statically; this checks a real import.
    code = (
        "import sys, fedmtl.config as c; c.load_experiment('digits'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('strategies', 'flwr')))"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )

    assert result.stdout.strip() == "[]"


def test_parsing_leaves_strategy_and_scopes_as_written() -> None:
    # Prepare: fedper has a scope preset; only run assembly applies it.
    values = {"strategy": "fedper", "scope-local": ["heads.*"]}

    # Execute
    cfg = build_config(values)

    # Assert
    assert cfg.strategy == "fedper"
    assert cfg.scope_local == ("heads.*",)
    assert cfg.scope_shared == ("*",)
    assert cfg.scopes_from == "strategy"
    # An unknown strategy is not the parser's business either.
    assert build_config({"strategy": "no-such-strategy"}).strategy == "no-such-strategy"
