"""Third-party strategies found through the ``fedmtl.strategies`` entry point group.

``tests/plugin_dist`` holds an "installed" example distribution (a package plus
its ``.dist-info`` metadata); putting it on ``sys.path`` is all it takes for
:mod:`importlib.metadata` to find its entry point. Nothing here imports the
example package by hand.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.serverapp.strategy import FedAvg

import strategies.registry as registry_module
from fedmtl.assembly import resolve_run
from fedmtl.config import ConfigError, ExperimentConfig, build_config
from strategies.registry import (
    STRATEGIES,
    Sampling,
    StrategyOptionError,
    available_strategies,
    build_strategy,
    refresh_plugins,
)

PLUGIN_DIST = Path(__file__).parent / "plugin_dist"
MODULE = "fedmtl_example_strategies"
NAME = "example-server-lr"


def _write_dist(root: Path, dist: str, version: str, entry_points: str) -> None:
    """An installed distribution's metadata, with ``fedmtl.strategies`` entry points."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[fedmtl.strategies]\n{entry_points}\n")


@pytest.fixture(autouse=True)
def _isolated_discovery() -> Iterator[None]:
    # Autouse: set up before, torn down after ``monkeypatch``, so the final
    # refresh sees ``sys.path`` restored and leaves no plug-in for other tests.
    sys.modules.pop(MODULE, None)
    refresh_plugins()
    yield
    sys.modules.pop(MODULE, None)
    refresh_plugins()


@pytest.fixture
def plugin_dist(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example distribution on ``sys.path``, discovered afresh."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIST))
    refresh_plugins()
    return PLUGIN_DIST


def test_example_dist_is_not_found_without_its_path() -> None:
    assert NAME not in available_strategies()
    with pytest.raises(StrategyOptionError, match=f"unknown strategy '{NAME}'"):
        build_strategy(NAME)


def test_plugin_is_listed_without_being_imported(plugin_dist: Path) -> None:
    # Execute
    names = available_strategies()

    # Assert
    assert NAME in names
    assert names == sorted(names)
    assert {"fedavg", "fedadam"} <= set(names)
    assert NAME in STRATEGIES
    assert MODULE not in sys.modules


def test_build_strategy_imports_the_plugin_on_first_use(plugin_dist: Path) -> None:
    # Prepare
    assert MODULE not in sys.modules

    # Execute
    strategy = build_strategy(NAME, {"server_lr": 0.5}, Sampling(fraction_train=0.25))

    # Assert
    assert MODULE in sys.modules
    assert type(strategy).__name__ == "ServerLrFedAvg"
    assert type(strategy).__module__ == MODULE
    assert isinstance(strategy, FedAvg)
    assert strategy.server_lr == 0.5  # type: ignore[attr-defined]
    assert strategy.fraction_train == 0.25
    # The loaded class is reused.
    assert STRATEGIES.get(NAME) is type(strategy)


def test_plugin_options_are_validated(plugin_dist: Path) -> None:
    assert build_strategy(NAME, {"server-lr": 0.1}).server_lr == 0.1  # type: ignore[attr-defined]
    with pytest.raises(StrategyOptionError) as info:
        build_strategy(NAME, {"server-lrr": 0.5})
    message = str(info.value)
    assert f"strategy '{NAME}' has no option 'server-lrr'" in message
    assert "did you mean 'server_lr'" in message
    with pytest.raises(StrategyOptionError, match="rejected its options"):
        build_strategy(NAME, {"server_lr": 2.0})
    with pytest.raises(StrategyOptionError, match="no option 'weighted-by-key'"):
        build_strategy(NAME, {"weighted-by-key": "n"})


def test_unknown_name_suggests_the_plugin(plugin_dist: Path) -> None:
    with pytest.raises(StrategyOptionError, match=f"did you mean '{NAME}'"):
        build_strategy("example-server-l")
    assert MODULE not in sys.modules


def _resolved(values: dict[str, object]) -> ExperimentConfig:
    """What a run does with ``values``: parse, then resolve (strategy built and checked)."""
    return resolve_run(build_config(values))


def test_run_assembly_accepts_the_plugin(plugin_dist: Path) -> None:
    # Execute
    cfg = resolve_run(build_config({"strategy": NAME}))
    tuned = resolve_run(build_config({"strategy": NAME, "strategy-options": {"server-lr": 0.5}}))

    # Assert
    assert cfg.strategy == NAME
    assert tuned.strategy_options == {"server-lr": 0.5}
    with pytest.raises(ConfigError, match=f"did you mean '{NAME}'") as name_error:
        _resolved({"strategy": "example-server-l"})
    assert name_error.value.key == "strategy"
    with pytest.raises(ConfigError, match="did you mean 'server_lr'") as option_error:
        _resolved({"strategy": NAME, "strategy-options": {"server-lrr": 0.5}})
    assert option_error.value.key == "strategy-options"


def test_run_assembly_rejects_the_plugin_without_its_dist() -> None:
    with pytest.raises(ConfigError, match="not a registered strategy"):
        _resolved({"strategy": NAME})


def test_broken_entry_point_names_entry_point_dist_and_error(
    plugin_dist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a second distribution whose entry point names a missing module.
    _write_dist(tmp_path, "broken-strategies", "0.2.0", "broken = no_such_plugin_module:Strategy")
    monkeypatch.syspath_prepend(str(tmp_path))
    refresh_plugins()
    assert {"broken", NAME} <= set(available_strategies())

    # Execute
    with pytest.raises(StrategyOptionError) as info:
        build_strategy("broken")

    # Assert
    message = str(info.value)
    assert "strategy 'broken'" in message
    assert "entry point 'broken = no_such_plugin_module:Strategy'" in message
    assert "distribution 'broken-strategies 0.2.0'" in message
    assert "No module named 'no_such_plugin_module'" in message
    with pytest.raises(ConfigError, match=re.escape("broken-strategies 0.2.0")) as config_error:
        _resolved({"strategy": "broken"})
    assert config_error.value.key == "strategy"
    # The other plug-in is unaffected.
    assert type(build_strategy(NAME)).__name__ == "ServerLrFedAvg"


def test_entry_point_to_a_missing_class_or_a_non_callable(
    plugin_dist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_dist(
        tmp_path,
        "odd-strategies",
        "1.0",
        f"no-class = {MODULE}:Missing\nnot-callable = {MODULE}:__all__",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    refresh_plugins()
    with pytest.raises(StrategyOptionError, match="AttributeError"):
        build_strategy("no-class")
    with pytest.raises(StrategyOptionError, match="not a strategy class or factory"):
        build_strategy("not-callable")


def test_clash_with_a_builtin_keeps_the_builtin(
    plugin_dist: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare
    _write_dist(tmp_path, "shadow-strategies", "1.0", f"fedavg = {MODULE}:ServerLrFedAvg")
    monkeypatch.syspath_prepend(str(tmp_path))

    # Execute
    with caplog.at_level(logging.WARNING, logger="strategies.registry"):
        plugins = refresh_plugins()

    # Assert
    assert plugins == [NAME]
    assert type(build_strategy("fedavg")) is FedAvg
    assert MODULE not in sys.modules
    [record] = [r for r in caplog.records if "fedavg" in r.getMessage()]
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert "distribution 'shadow-strategies 1.0'" in message  # the plug-in's
    assert "distribution 'flwr'" in message  # the built-in's
    assert "keeping the built-in" in message


def test_two_plugins_of_one_name_keep_the_first_on_the_path(
    plugin_dist: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _write_dist(tmp_path, "copycat-strategies", "0.1", f"{NAME} = no_such_plugin_module:X")
    monkeypatch.syspath_prepend(str(tmp_path))  # before plugin_dist on sys.path
    with caplog.at_level(logging.WARNING, logger="strategies.registry"):
        refresh_plugins()
    with pytest.raises(StrategyOptionError, match=re.escape("copycat-strategies 0.1")):
        build_strategy(NAME)
    assert "fedmtl-example-strategies 0.1.0" in caplog.text
    assert "keeping the first" in caplog.text


def test_bad_plugin_name_is_skipped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _write_dist(tmp_path, "loud-strategies", "1.0", "Loud_Name = no_such_plugin_module:X")
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="strategies.registry"):
        assert refresh_plugins() == []
    assert "Loud_Name" not in available_strategies()
    assert "loud_name" not in available_strategies()
    assert "Loud_Name" in caplog.text
    assert "must be lower-case" in caplog.text


def test_in_process_registration_shadows_a_plugin(
    plugin_dist: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: restore the registry's in-process entries afterwards.
    monkeypatch.setattr(STRATEGIES, "_items", dict(STRATEGIES._items))
    assert NAME in STRATEGIES

    # Execute
    with caplog.at_level(logging.WARNING, logger="strategies.registry"):
        registry_module.register(NAME)(FedAvg)

    # Assert
    assert STRATEGIES.get(NAME) is FedAvg
    assert MODULE not in sys.modules
    assert "shadows the plug-in" in caplog.text
    assert available_strategies().count(NAME) == 1


def test_discovery_is_cached_until_refreshed(
    plugin_dist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    calls: list[str] = []
    real_entry_points = importlib.metadata.entry_points

    def counting_entry_points(*, group: str):  # type: ignore[no-untyped-def]
        calls.append(group)
        return real_entry_points(group=group)

    monkeypatch.setattr(registry_module, "entry_points", counting_entry_points)
    refresh_plugins()

    # Execute
    for _ in range(3):
        assert NAME in available_strategies()
        assert NAME in STRATEGIES

    # Assert
    assert calls == ["fedmtl.strategies"]
    refresh_plugins()
    assert calls == ["fedmtl.strategies"] * 2


def test_a_plugin_with_a_misspelled_preset_is_refused_when_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a plug-in whose preset is a plain table with a typo ("lokal")
    (tmp_path / "lokal_plugin.py").write_text(
        "from flwr.serverapp.strategy import FedAvg\n\n\n"
        "class Lokal(FedAvg):\n"
        "    scope_preset = {'lokal': ('heads.*',), 'shared': ('backbone.*',)}\n"
    )
    _write_dist(tmp_path, "lokal-strategies", "0.1", "lokal = lokal_plugin:Lokal")
    monkeypatch.syspath_prepend(str(tmp_path))
    refresh_plugins()

    # Execute
    with pytest.raises(StrategyOptionError) as info:
        build_strategy("lokal")
    with pytest.raises(ConfigError) as config_error:
        _resolved({"strategy": "lokal"})

    # Assert
    message = str(info.value)
    assert "strategy 'lokal'" in message
    assert "lokal-strategies 0.1" in message
    assert "'lokal' is not a scope field (did you mean 'local'?)" in message
    assert config_error.value.key == "strategy"
    sys.modules.pop("lokal_plugin", None)


@pytest.mark.parametrize("module", ["tests.example_plugin:HalfStepFedAvg", "tests.missing:Nope"])
def test_the_fedmtl_command_imports_plugins_from_the_working_directory(module: str) -> None:
    # The console script, not `python -m` (which would put the directory on sys.path itself).
    fedmtl = Path(sys.executable).parent / "fedmtl"
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(fedmtl), "scopes", "--set", f"strategy={module}"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if module.startswith("tests.missing"):
        assert result.returncode == 2 and "cannot import 'tests.missing'" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert "backbone." in result.stdout
