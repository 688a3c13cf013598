"""Tests for :mod:`strategies.registry` and :mod:`fedmtl.registry`."""

from __future__ import annotations

import pytest
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

from fedmtl.registry import Registry, RegistryError
from strategies.registry import (
    STRATEGIES,
    Sampling,
    StrategyOptionError,
    available_strategies,
    build_strategy,
)
from tests.custom_strategy import HalfStepFedAvg, StrictFedAvg


def test_build_strategy_sets_options() -> None:
    # Execute
    strategy = build_strategy("fedadam", {"eta": 0.1})

    # Assert
    assert isinstance(strategy, FedAdam)
    assert strategy.eta == 0.1


def test_kebab_case_options_are_accepted() -> None:
    strategy = build_strategy("fedprox", {"proximal-mu": 0.3})
    assert isinstance(strategy, FedProx)
    assert strategy.proximal_mu == 0.3


def test_sampling_reaches_the_strategy() -> None:
    # Prepare
    sampling = Sampling(fraction_train=0.5, fraction_evaluate=0.25, min_available_nodes=8)

    # Execute
    strategy = build_strategy("fedavg", sampling=sampling)

    # Assert
    assert isinstance(strategy, FedAvg)
    assert strategy.fraction_train == 0.5
    assert strategy.fraction_evaluate == 0.25
    assert strategy.min_available_nodes == 8
    assert strategy.min_train_nodes == 4
    assert strategy.min_evaluate_nodes == 2


def test_sampling_kwargs_by_hand() -> None:
    assert Sampling(1.0, 0.0, 0).kwargs() == {
        "fraction_train": 1.0,
        "fraction_evaluate": 0.0,
        "min_train_nodes": 1,
        "min_evaluate_nodes": 0,
        "min_available_nodes": 1,
    }


def test_unknown_option_suggests_the_right_one() -> None:
    with pytest.raises(StrategyOptionError) as info:
        build_strategy("fedadam", {"etta": 0.1})
    message = str(info.value)
    assert "no option 'etta'" in message
    assert "did you mean 'eta'" in message
    assert "beta_1" in message  # lists what is allowed


def test_constructor_error_is_wrapped() -> None:
    with pytest.raises(StrategyOptionError, match="rejected its options"):
        build_strategy("tests.custom_strategy:HalfStepFedAvg", {"no_such_arg": 1})


def test_import_class_by_reference() -> None:
    # Execute
    strategy = build_strategy("tests.custom_strategy:HalfStepFedAvg", {"server-lr": 0.25})

    # Assert
    assert type(strategy) is HalfStepFedAvg
    assert strategy.server_lr == 0.25


def test_sampling_reaches_a_strategy_that_forwards_kwargs() -> None:
    strategy = build_strategy(
        "tests.custom_strategy:HalfStepFedAvg",
        {"server-lr": 0.25},
        Sampling(fraction_train=0.5, min_available_nodes=4),
    )
    assert isinstance(strategy, HalfStepFedAvg)
    assert strategy.fraction_train == 0.5
    assert strategy.min_available_nodes == 4


def test_import_class_only_gets_the_sampling_it_accepts() -> None:
    strategy = build_strategy(
        "tests.custom_strategy:StrictFedAvg", {"beta": 0.9}, Sampling(fraction_train=0.3)
    )
    assert isinstance(strategy, StrictFedAvg)
    assert strategy.beta == 0.9
    assert strategy.fraction_train == 0.3
    with pytest.raises(StrategyOptionError, match="did you mean 'beta'"):
        build_strategy("tests.custom_strategy:StrictFedAvg", {"betta": 0.9})


@pytest.mark.parametrize(
    ("reference", "match"),
    [
        ("tests.no_such_module:Cls", "cannot import 'tests.no_such_module'"),
        ("tests.custom_strategy:Missing", "has no class 'Missing'"),
        ("tests.custom_strategy:not_callable", "has no class 'not_callable'"),
        ("tests.custom_strategy:NotAStrategy", "not a flwr Strategy"),
        (":FedAvg", "must be a registered name"),
        ("tests.custom_strategy:", "must be a registered name"),
    ],
)
def test_bad_references_raise(reference: str, match: str) -> None:
    with pytest.raises(StrategyOptionError, match=match):
        build_strategy(reference)


def test_unknown_name_suggests_the_right_one() -> None:
    with pytest.raises(Exception, match="did you mean 'fedavg'") as info:
        build_strategy("fedavgg")
    assert "fedyogi" in str(info.value)  # lists the available names


def test_unknown_name_raises_strategy_option_error() -> None:
    with pytest.raises(StrategyOptionError):
        build_strategy("fedavgg")


def test_available_strategies_lists_flower_builtins() -> None:
    names = available_strategies()
    assert names == sorted(names)
    assert {"fedavg", "fedadam", "fedprox", "krum", "bulyan"} <= set(names)
    assert "fedavg" in STRATEGIES


# ----------------------------------------------------------- fedmtl.registry
def test_registry_add_get_and_names() -> None:
    # Prepare
    registry: Registry[int] = Registry("widget")

    # Execute
    registry.add("b-2", 2)
    decorated = registry.register("a.1")(1)

    # Assert
    assert decorated == 1
    assert registry.get("a.1") == 1
    assert registry.get("b-2") == 2
    assert registry.names() == ["a.1", "b-2"]
    assert "a.1" in registry
    assert "c" not in registry


def test_registry_rejects_duplicates() -> None:
    registry: Registry[int] = Registry("widget")
    registry.add("one", 1)
    with pytest.raises(RegistryError, match="widget 'one' is already registered"):
        registry.add("one", 2)
    assert registry.get("one") == 1


@pytest.mark.parametrize("name", ["", "Upper", "with space", "-leading", "_x", "a/b", "é"])
def test_registry_rejects_bad_names(name: str) -> None:
    registry: Registry[int] = Registry("widget")
    with pytest.raises(RegistryError, match="must be lower-case"):
        registry.add(name, 1)
    assert registry.names() == []


def test_registry_unknown_name_suggests_and_lists() -> None:
    registry: Registry[int] = Registry("widget")
    registry.add("sprocket", 1)
    registry.add("gear", 2)
    with pytest.raises(RegistryError) as info:
        registry.get("sprockt")
    message = str(info.value)
    assert "unknown widget 'sprockt'" in message
    assert "did you mean 'sprocket'" in message
    assert "['gear', 'sprocket']" in message
    assert isinstance(info.value, KeyError)


@pytest.mark.parametrize("option", ["weighted-by-key", "arrayrecord_key", "configrecord-key"])
def test_wire_layout_options_are_refused(option: str) -> None:
    with pytest.raises(StrategyOptionError, match=f"no option '{option}'"):
        build_strategy("fedavg", {option: "x"})


def test_registry_iterates_its_names_sorted_and_counts_them() -> None:
    # Prepare
    registry: Registry[int] = Registry("widget")
    registry.add("b", 2)
    registry.add("a", 1)

    # Execute / Assert
    assert list(registry) == ["a", "b"]
    assert len(registry) == 2
    assert len(STRATEGIES) == len(available_strategies())


def test_option_errors_say_whether_the_options_are_at_fault() -> None:
    with pytest.raises(StrategyOptionError) as bad_option:
        build_strategy("fedadam", {"etta": 0.1})
    with pytest.raises(StrategyOptionError) as rejected:
        build_strategy("tests.custom_strategy:HalfStepFedAvg", {"no_such_arg": 1})
    with pytest.raises(StrategyOptionError) as bad_name:
        build_strategy("fedavgg")
    assert bad_option.value.options and rejected.value.options
    assert not bad_name.value.options
