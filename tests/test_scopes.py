"""Tests for :mod:`fedmtl.scopes`."""

from __future__ import annotations

import pytest

from fedmtl.config import SCOPES, ConfigError, build_config, scope_rules
from fedmtl.models import build_model
from fedmtl.scopes import (
    FINETUNE_MODES,
    ScopePreset,
    ScopeRuleError,
    ScopeRules,
    assign_scopes,
    describe_bad_preset,
    finetune_frozen_patterns,
    keys_in,
    matches,
    scope_of,
    task_relevant,
)

TASKS = {"digit": 10, "parity": 2}


@pytest.fixture(scope="module")
def state_keys() -> list[str]:
    model = build_model("digits-cnn", TASKS, pretrained="none", seed=0)
    return list(model.state_dict().keys())


def test_every_model_key_gets_exactly_one_scope(state_keys: list[str]) -> None:
    # Prepare
    rules = scope_rules(build_config({"scope-frozen": ["backbone.conv1.*"]}))

    # Execute
    scopes = assign_scopes(state_keys, rules)
    groups = {scope: keys_in(scopes, scope) for scope in SCOPES}

    # Assert: a partition of the state_dict keys, order kept inside each scope
    assert list(scopes) == state_keys
    assert set(scopes.values()) <= set(SCOPES)
    assert sorted(k for keys in groups.values() for k in keys) == sorted(state_keys)
    for scope, keys in groups.items():
        assert keys == [k for k in state_keys if scopes[k] == scope]
    assert groups["frozen"] == ["backbone.conv1.weight", "backbone.conv1.bias"]
    assert "heads.digit.weight" in groups["local"]
    assert "backbone.bn1.num_batches_tracked" in groups["local"]
    assert "backbone.bn1.running_mean" in groups["shared"]
    assert groups["task"] == []


def test_model_has_buffers_and_heads_per_task(state_keys: list[str]) -> None:
    assert {"heads.digit.weight", "heads.digit.bias", "heads.parity.weight"} <= set(state_keys)
    assert any(k.endswith("running_var") for k in state_keys)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("heads.digit.weight", "frozen"),  # frozen beats local, task and shared
        ("heads.parity.weight", "local"),  # local beats task and shared
        ("backbone.proj.weight", "task"),  # task beats shared
        ("backbone.conv1.weight", "shared"),
        ("other.thing", "local"),  # unmatched -> default
    ],
)
def test_precedence_frozen_local_task_shared_default(name: str, expected: str) -> None:
    # Prepare: every pattern set matches heads.digit.*, so only precedence decides
    rules = ScopeRules(
        frozen=("heads.digit.*",),
        local=("heads.*",),
        task=("heads.*", "backbone.proj.*"),
        shared=("heads.*", "backbone.*"),
        default="local",
    )

    # Execute
    scope = scope_of(name, rules)

    # Assert
    assert scope == expected


def test_default_scope_applies_to_unmatched_names() -> None:
    rules = ScopeRules(frozen=(), local=(), task=(), shared=("backbone.*",), default="frozen")
    assert scope_of("heads.digit.bias", rules) == "frozen"
    assert scope_of("backbone.x", rules) == "shared"


def test_regex_patterns_use_full_match() -> None:
    # Prepare
    rules = ScopeRules(
        local=(r"re:backbone\.bn\d\.(running_mean|running_var)",),
        task=(),
        shared=(),
        default="shared",
    )

    # Execute / Assert
    assert scope_of("backbone.bn1.running_mean", rules) == "local"
    assert scope_of("backbone.bn2.running_var", rules) == "local"
    assert scope_of("backbone.bn1.running_mean.extra", rules) == "shared"  # no prefix match
    assert scope_of("x.backbone.bn1.running_var", rules) == "shared"
    assert matches("heads.digit.weight", "re:heads\\..*")
    assert not matches("heads.digit.weight", "re:heads")


def test_glob_patterns_are_case_sensitive() -> None:
    assert matches("heads.digit.weight", "heads.*")
    assert not matches("Heads.digit.weight", "heads.*")


def test_invalid_regex_raises_value_error() -> None:
    with pytest.raises(ValueError, match="scope-task pattern 're:\\(unclosed'"):
        ScopeRules(task=("re:(unclosed",))


def test_unknown_default_scope_raises_value_error() -> None:
    with pytest.raises(ValueError, match="default scope 'global'"):
        ScopeRules(default="global")


@pytest.mark.parametrize(
    ("name", "task", "expected"),
    [
        ("backbone.conv1.weight", "digit", True),
        ("heads.digit.weight", "digit", True),
        ("heads.parity.weight", "digit", False),
        ("heads.digit.bias", "dig", False),  # a prefix of another task's name
        ("heads.digit2.bias", "digit", False),
    ],
)
def test_task_relevant(name: str, task: str, expected: bool) -> None:
    assert task_relevant(name, task) is expected


def test_task_relevant_custom_head_prefix() -> None:
    assert task_relevant("towers.a.w", "a", head_prefix="towers.")
    assert not task_relevant("towers.b.w", "a", head_prefix="towers.")
    assert task_relevant("heads.b.w", "a", head_prefix="towers.")


# ---------------------------------------------------------------- scope presets


def test_scope_preset_keeps_its_rules() -> None:
    preset = ScopePreset(task=("heads.*",), local=("backbone.*",), default="local")
    assert (preset.frozen, preset.local, preset.task, preset.shared) == (
        (),
        ("backbone.*",),
        ("heads.*",),
        (),
    )
    assert preset.default == "local"


@pytest.mark.parametrize(
    ("kwargs", "field", "fragment"),
    [
        ({"default": "lokal"}, "default", "default scope 'lokal'"),
        ({"local": "heads.*"}, "local", "must be a tuple of strings"),  # a str, not a tuple
        ({"shared": ("backbone.*", 3)}, "shared", "must be a tuple of strings"),
        ({"task": ("re:(",)}, "task", "scope-task pattern 're:('"),
    ],
)
def test_scope_preset_is_validated_when_built(
    kwargs: dict[str, object], field: str, fragment: str
) -> None:
    with pytest.raises(ScopeRuleError) as info:
        ScopePreset(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert fragment in str(info.value)


def test_a_table_is_described_by_its_misspelled_key() -> None:
    assert "'lokal' is not a scope field (did you mean 'local'?)" in describe_bad_preset(
        {"lokal": ("heads.*",)}
    )
    assert "got a dict" in describe_bad_preset({"local": ("heads.*",)})
    assert "got a str" in describe_bad_preset("heads.*")


# ---------------------------------------------------------------- fine-tuning modes


def test_fine_tuning_modes_are_a_registry() -> None:
    assert list(FINETUNE_MODES) == ["frozen", "full", "last-k", "lora"]
    assert len(FINETUNE_MODES) == 4
    assert finetune_frozen_patterns("full") == ()
    assert finetune_frozen_patterns("frozen") == ("backbone.*",)


def test_unknown_fine_tuning_mode_suggests_the_closest() -> None:
    with pytest.raises(ValueError, match="did you mean 'lora'"):
        finetune_frozen_patterns("lorra")


def test_config_choices_for_finetune_read_the_registry() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"finetune": "lorra"})
    assert info.value.key == "finetune"
    assert "did you mean 'lora'" in str(info.value)
