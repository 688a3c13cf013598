"""Strategy registry: names and ``"package.module:ClassName"`` to Flower strategies.

Three kinds of strategies are usable by name (``strategy = "..."`` in an
experiment file):

* Flower's own strategies (``fedavg``, ``fedadam``, ...) and the ones this
  package ships, registered when it is imported;
* strategies registered in-process with :func:`register`;
* third-party strategies declared by an installed distribution through the
  entry point group ``fedmtl.strategies``. A package declares one in its
  ``pyproject.toml``::

      [project.entry-points."fedmtl.strategies"]
      my-strategy = "my_pkg.strategies:MyStrategy"

  The entry point's name is the strategy name (it must follow the registry
  rule: lower-case letters, digits, ``-``, ``_``, ``.``) and its object a
  Flower ``Strategy`` class or a factory returning one; it is called like any
  other strategy, with the sampling keyword arguments it accepts plus the
  experiment's ``strategy-options``.

Plug-ins are loaded lazily: discovery reads only the installed metadata, so
their names appear in :func:`available_strategies` (and in configuration errors
and "did you mean" hints) without importing them; a plug-in module is imported
when :func:`build_strategy` (or ``STRATEGIES.get``) asks for its name. A
plug-in whose name is already taken by a built-in or registered strategy is
ignored with a warning (the built-in wins); between two plug-ins of the same
name the first one found on ``sys.path`` wins. A plug-in that fails to import
raises :class:`StrategyOptionError` naming the entry point, its distribution and
the error. Discovery is cached; :func:`refresh_plugins` scans again (after
installing a package at run time, or in tests).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import Distribution, EntryPoint, entry_points, packages_distributions
from typing import Any

from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
)

from fedmtl.registry import Registry, RegistryError, is_valid_name
from fedmtl.scopes import ScopePreset, describe_bad_preset

logger = logging.getLogger(__name__)

# Entry point group under which installed distributions declare strategies.
ENTRY_POINT_GROUP = "fedmtl.strategies"


class StrategyOptionError(ValueError):
    """A strategy name or option that cannot be used, with what is allowed.

    Parameters
    ----------
    message : str
        What is wrong and what is allowed.
    options : bool
        Whether the strategy's options are at fault (rather than its name,
        import or declaration).
    """

    def __init__(self, message: str, *, options: bool = False) -> None:
        super().__init__(message)
        self.options = options


@dataclass(frozen=True)
class Sampling:
    """How many nodes a round uses; shared by every strategy."""

    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_available_nodes: int = 2

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments understood by Flower's FedAvg family."""
        min_nodes = max(1, self.min_available_nodes)
        return {
            "fraction_train": self.fraction_train,
            "fraction_evaluate": self.fraction_evaluate,
            "min_train_nodes": max(1, int(self.fraction_train * min_nodes)),
            "min_evaluate_nodes": max(1, int(self.fraction_evaluate * min_nodes))
            if self.fraction_evaluate > 0
            else 0,
            "min_available_nodes": min_nodes,
        }


StrategyFactory = Callable[..., Strategy]
# Constructor arguments that fix the wire format; an experiment may not change them.
WIRE_ARGUMENTS = frozenset(
    {
        "arrayrecord_key",
        "configrecord_key",
        "weighted_by_key",
        "train_metrics_aggr_fn",
        "evaluate_metrics_aggr_fn",
    }
)


def _distribution(dist: Distribution | None) -> str:
    if dist is None:
        return "an unknown distribution"
    return f"distribution '{dist.metadata['Name']} {dist.version}'"


def _describe(entry_point: EntryPoint) -> str:
    return (
        f"entry point '{entry_point.name} = {entry_point.value}' "
        f"of {_distribution(entry_point.dist)}"
    )


@functools.cache
def _packages_distributions() -> Mapping[str, list[str]]:
    # Reads every installed RECORD (~0.4 s): only for clash warnings, cached until refresh.
    return packages_distributions()


def _provider(obj: object) -> str:
    """Where an in-process strategy comes from: its module and distribution."""
    module = getattr(obj, "__module__", None) or "?"
    qualname = getattr(obj, "__qualname__", type(obj).__qualname__)
    dists = _packages_distributions().get(module.partition(".")[0], [])
    where = f"distribution '{', '.join(sorted(set(dists)))}'" if dists else "no distribution"
    return f"{module}:{qualname} from {where}"


def check_scope_preset(label: str, factory: object) -> None:
    """A strategy's ``scope_preset`` is absent or a :class:`~fedmtl.scopes.ScopePreset`.

    Checked when a strategy is registered, loaded from a plug-in or imported as
    ``"package.module:ClassName"``, so a misspelled scope is an error, not ignored.

    Raises
    ------
    StrategyOptionError
        Naming the strategy (``label``) and, for a table, its bad key.
    """
    preset = getattr(factory, "scope_preset", None)
    if preset is not None and not isinstance(preset, ScopePreset):
        raise StrategyOptionError(f"{label}: {describe_bad_preset(preset)}")


class StrategyRegistry(Registry[StrategyFactory]):
    """Strategy registry that also lists plug-ins of an entry point group, loaded lazily.

    Parameters
    ----------
    kind : str
        What the registry holds, used in messages ("strategy").
    group : str
        Entry point group scanned for plug-ins (``"fedmtl.strategies"``).
    """

    def __init__(self, kind: str, group: str) -> None:
        super().__init__(kind)
        self.group = group
        self._plugins: dict[str, EntryPoint] | None = None
        self._loaded: dict[str, StrategyFactory] = {}
        self._lock = threading.RLock()

    def plugins(self) -> dict[str, EntryPoint]:
        """Plug-in entry points by strategy name (discovered once, then cached)."""
        with self._lock:
            if self._plugins is None:
                self._plugins = self._discover()
            return dict(self._plugins)

    def refresh(self) -> list[str]:
        """Forget discovered and loaded plug-ins, scan again; return the plug-in names."""
        with self._lock:
            importlib.invalidate_caches()  # also drops importlib.metadata's path caches
            _packages_distributions.cache_clear()
            self._plugins = None
            self._loaded.clear()
            return sorted(self.plugins())

    def _discover(self) -> dict[str, EntryPoint]:
        found: dict[str, EntryPoint] = {}
        for entry_point in entry_points(group=self.group):
            name = entry_point.name
            if not is_valid_name(name):
                logger.warning(
                    "ignoring %s %s: the name must be lower-case letters, digits, '-', '_' or '.'",
                    self.kind,
                    _describe(entry_point),
                )
            elif name in self._items:
                logger.warning(
                    "ignoring %s %s: '%s' is already the built-in %s %s; keeping the built-in",
                    self.kind,
                    _describe(entry_point),
                    name,
                    self.kind,
                    _provider(self._items[name]),
                )
            elif name in found:
                logger.warning(
                    "ignoring %s %s: '%s' is already provided by %s; keeping the first",
                    self.kind,
                    _describe(entry_point),
                    name,
                    _describe(found[name]),
                )
            else:
                found[name] = entry_point
        return found

    def add(self, name: str, obj: StrategyFactory) -> None:
        """Register ``obj`` under ``name``; it shadows a plug-in of the same name.

        Raises
        ------
        StrategyOptionError
            When ``obj`` declares a ``scope_preset`` that is not a ``ScopePreset``.
        """
        check_scope_preset(f"{self.kind} '{name}'", obj)
        with self._lock:
            super().add(name, obj)
            if self._plugins is not None and name in self._plugins:
                logger.warning(
                    "%s '%s' registered in-process (%s) shadows the plug-in %s",
                    self.kind,
                    name,
                    _provider(obj),
                    _describe(self._plugins.pop(name)),
                )
                self._loaded.pop(name, None)

    def get(self, name: str) -> StrategyFactory:
        """Return the strategy ``name``, importing its plug-in on first use.

        Raises
        ------
        RegistryError
            Unknown name (with a "did you mean" hint).
        StrategyOptionError
            A plug-in that cannot be imported or is not callable.
        """
        if name not in self._items:
            entry_point = self.plugins().get(name)
            if entry_point is not None:
                return self._load(name, entry_point)
        return super().get(name)

    def _load(self, name: str, entry_point: EntryPoint) -> StrategyFactory:
        with self._lock:
            if name in self._loaded:
                return self._loaded[name]
            try:
                factory = entry_point.load()
            except Exception as exc:
                raise StrategyOptionError(
                    f"{self.kind} '{name}': cannot load {_describe(entry_point)}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if not callable(factory):
                raise StrategyOptionError(
                    f"{self.kind} '{name}': {_describe(entry_point)} gives a "
                    f"{type(factory).__name__}, not a strategy class or factory"
                )
            check_scope_preset(f"{self.kind} '{name}' ({_describe(entry_point)})", factory)
            self._loaded[name] = factory
            return factory  # type: ignore[no-any-return]

    def names(self) -> list[str]:
        """Registered and plug-in names, sorted (plug-ins are not imported)."""
        return sorted(set(self._items) | set(self.plugins()))

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self.plugins()


STRATEGIES = StrategyRegistry("strategy", ENTRY_POINT_GROUP)


def register(name: str) -> Callable[[StrategyFactory], StrategyFactory]:
    """Register a strategy class (or factory) under ``name``.

    The factory is called with the sampling keyword arguments it accepts
    (``fraction_train``, ``min_available_nodes``, ...) plus the experiment's
    ``strategy-options``.
    """
    return STRATEGIES.register(name)


# Flower's own strategies, usable by name on the shared scope.
for _name, _cls in {
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
    "multikrum": MultiKrum,
    "bulyan": Bulyan,
}.items():
    STRATEGIES.add(_name, _cls)


def strategy_scope_preset(name: str) -> ScopePreset | None:
    """The :class:`~fedmtl.scopes.ScopePreset` a strategy declares (``None`` if none or unknown).

    A personalization strategy (FedPer, LG-FedAvg, FedBN, ...) sets the class
    attribute ``scope_preset = ScopePreset(local=(...), shared=(...), ...)``;
    with ``scopes-from = "strategy"`` (the default) run assembly
    (:func:`fedmtl.assembly.resolve_run`) writes it into the experiment's
    ``scope-*`` keys.
    """
    try:
        factory = _import_factory(name) if ":" in name else STRATEGIES.get(name)
    except (RegistryError, StrategyOptionError):
        return None
    preset = getattr(factory, "scope_preset", None)
    return preset if isinstance(preset, ScopePreset) else None


def available_strategies() -> list[str]:
    """Names usable as ``strategy = "..."`` in an experiment file (plug-ins included)."""
    return STRATEGIES.names()


def refresh_plugins() -> list[str]:
    """Scan the ``fedmtl.strategies`` entry points again; return the plug-in names.

    Discovery is cached; call this after changing ``sys.path`` or installing a
    package in a running process (tests do). Loaded plug-ins are forgotten too.
    """
    return STRATEGIES.refresh()


def _import_factory(reference: str) -> StrategyFactory:
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise StrategyOptionError(
            f"strategy '{reference}' must be a registered name or 'package.module:ClassName'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StrategyOptionError(
            f"strategy '{reference}': cannot import '{module_name}': {exc}"
        ) from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise StrategyOptionError(f"strategy '{reference}': '{module_name}' has no class '{attr}'")
    check_scope_preset(f"strategy '{reference}'", factory)
    return factory  # type: ignore[no-any-return]


def _accepted_parameters(factory: StrategyFactory) -> tuple[set[str], bool]:
    signature = inspect.signature(factory)
    names = {p for p in signature.parameters if p != "self"}
    takes_kwargs = any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
    )
    return names, takes_kwargs


def build_strategy(
    name: str, options: Mapping[str, Any] | None = None, sampling: Sampling | None = None
) -> Strategy:
    """Instantiate the strategy ``name`` with validated ``options``.

    Parameters
    ----------
    name : str
        A registered name (``"fedadam"``) or ``"package.module:ClassName"``.
    options : mapping, optional
        Constructor options (kebab-case or snake_case keys), e.g. ``{"eta": 0.01}``.
    sampling : Sampling, optional
        Node sampling shared by all strategies.

    Raises
    ------
    StrategyOptionError
        Unknown strategy, option not accepted by it, or a constructor error.
    """
    try:
        factory = _import_factory(name) if ":" in name else STRATEGIES.get(name)
    except RegistryError as exc:
        raise StrategyOptionError(str(exc)) from None
    accepted, takes_kwargs = _accepted_parameters(factory)
    # A factory taking **kwargs (a subclass forwarding to FedAvg) gets the sampling too.
    kwargs = {
        k: v for k, v in (sampling or Sampling()).kwargs().items() if k in accepted or takes_kwargs
    }
    for key, value in (options or {}).items():
        arg = key.replace("-", "_")
        if (arg not in accepted and not takes_kwargs) or arg in WIRE_ARGUMENTS:
            allowed = sorted(accepted - set(Sampling().kwargs()) - WIRE_ARGUMENTS)
            close = difflib.get_close_matches(arg, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise StrategyOptionError(
                f"strategy '{name}' has no option '{key}'{hint}; allowed: {allowed}",
                options=True,
            )
        kwargs[arg] = value
    try:
        strategy = factory(**kwargs)
    except (TypeError, ValueError) as exc:
        raise StrategyOptionError(
            f"strategy '{name}' rejected its options: {exc}", options=True
        ) from exc
    if not isinstance(strategy, Strategy):
        raise StrategyOptionError(
            f"strategy '{name}' built a {type(strategy).__name__}, not a flwr Strategy"
        )
    return strategy
