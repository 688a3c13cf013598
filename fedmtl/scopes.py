"""Parameter scopes: every state_dict entry belongs to exactly one scope.

=======  =======  =================  ==============================  ==========================
scope    trained  leaves the client  aggregated over                 kept between rounds
=======  =======  =================  ==============================  ==========================
frozen   no       never              -                               rebuilt from pretrained
shared   yes      yes                all sampled clients             server (global)
task     yes      yes                sampled clients of that task    server (one copy per task)
local    yes      never              -                               client state
=======  =======  =================  ==============================  ==========================

Rules are name patterns (``fnmatch`` globs, or ``re:<regex>``), tried PEFT-style:
exclusions (frozen) first, then local, task, shared; anything unmatched gets the
default scope. No torch here: scopes work on names.

A personalization strategy brings its rules as a :class:`ScopePreset` (validated
when built); a fine-tuning mode (:data:`FINETUNE_MODES`, a registry) adds frozen
patterns in front of the run's rules.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields

from fedmtl.registry import Registry, RegistryError

SCOPE_ORDER = ("frozen", "local", "task", "shared")


class ScopeRuleError(ValueError):
    """A scope rule that cannot be used: a bad pattern, a bad default, an unknown field.

    Parameters
    ----------
    field : str
        The offending field (``"local"``, ``"default"``, ...).
    message : str
        What is wrong and what is allowed.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def _check_rules(rules: ScopeRules | ScopePreset) -> None:
    """Patterns are tuples of strings, ``re:`` patterns compile, the default is a scope."""
    if rules.default not in SCOPE_ORDER:
        raise ScopeRuleError(
            "default", f"default scope {rules.default!r} is not one of {list(SCOPE_ORDER)}"
        )
    for scope in SCOPE_ORDER:
        patterns = getattr(rules, scope)
        # A bare string is the usual slip: ("heads.*") is a str, ("heads.*",) a tuple.
        if not isinstance(patterns, tuple) or not all(isinstance(p, str) for p in patterns):
            raise ScopeRuleError(
                scope, f"scope-{scope} patterns must be a tuple of strings, got {patterns!r}"
            )
        for pattern in patterns:
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as exc:
                    raise ScopeRuleError(
                        scope, f"scope-{scope} pattern '{pattern}': {exc}"
                    ) from None


@dataclass(frozen=True)
class ScopeRules:
    """Name patterns per scope and the default for unmatched names."""

    frozen: tuple[str, ...] = ()
    local: tuple[str, ...] = ("heads.*",)
    task: tuple[str, ...] = ()
    shared: tuple[str, ...] = ("*",)
    default: str = "shared"

    def __post_init__(self) -> None:
        _check_rules(self)


@dataclass(frozen=True)
class ScopePreset:
    """The scope rules a personalization strategy brings (its class attribute ``scope_preset``).

    With ``scopes-from = "strategy"`` run assembly applies it: ``frozen`` patterns
    are added after the run's own, the other fields replace the run's
    ``scope-local``, ``scope-task``, ``scope-shared`` and ``scope-default``.
    Validated when built (patterns are tuples of strings, ``re:`` patterns
    compile, ``default`` is a scope), so a strategy with a bad preset fails when
    it is registered, not in the middle of a run.

    Examples
    --------
    FedPer keeps every head on its client and averages the body::

        scope_preset = ScopePreset(local=("heads.*",), shared=("backbone.*",))
    """

    frozen: tuple[str, ...] = ()
    local: tuple[str, ...] = ()
    task: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
    default: str = "shared"

    def __post_init__(self) -> None:
        _check_rules(self)


PRESET_FIELDS = tuple(f.name for f in fields(ScopePreset))


def describe_bad_preset(preset: object) -> str:
    """Why ``preset`` is not a :class:`ScopePreset`, naming a misspelled field if it has one."""
    kind = type(preset).__name__
    if isinstance(preset, Mapping):
        unknown = [k for k in preset if k not in PRESET_FIELDS]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), PRESET_FIELDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            return (
                f"scope_preset key {unknown[0]!r} is not a scope field{hint}; "
                f"fields: {list(PRESET_FIELDS)}"
            )
    return (
        f"scope_preset must be a fedmtl.scopes.ScopePreset, got a {kind}; "
        "write it as ScopePreset(local=(...), shared=(...), default='shared')"
    )


def matches(name: str, pattern: str) -> bool:
    """Whether ``name`` matches a glob or a ``re:`` regex (full match)."""
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def scope_of(name: str, rules: ScopeRules) -> str:
    """The scope of one state_dict key."""
    for scope in SCOPE_ORDER:
        if any(matches(name, p) for p in getattr(rules, scope)):
            return scope
    return rules.default


def assign_scopes(names: Iterable[str], rules: ScopeRules) -> dict[str, str]:
    """Map every name to exactly one scope, in the given order."""
    return {name: scope_of(name, rules) for name in names}


def keys_in(scopes: Mapping[str, str], scope: str) -> list[str]:
    """Names assigned to ``scope``, in state_dict order."""
    return [name for name, s in scopes.items() if s == scope]


def task_relevant(name: str, task: str, head_prefix: str = "heads.") -> bool:
    """Whether a key matters to a client of ``task`` (other tasks' heads do not)."""
    return not name.startswith(head_prefix) or name.startswith(f"{head_prefix}{task}.")


#: ``frozen_patterns(blocks, num_blocks, prefix)``: frozen-scope patterns of a fine-tuning mode.
FrozenPatterns = Callable[[Sequence[tuple[str, ...]], int, str], tuple[str, ...]]

#: Fine-tuning modes (``finetune = "..."``) by name.
FINETUNE_MODES: Registry[FrozenPatterns] = Registry("fine-tuning mode")


@FINETUNE_MODES.register("full")
def _full(blocks: Sequence[tuple[str, ...]], num_blocks: int, prefix: str) -> tuple[str, ...]:
    return ()


@FINETUNE_MODES.register("frozen")
def _frozen(blocks: Sequence[tuple[str, ...]], num_blocks: int, prefix: str) -> tuple[str, ...]:
    return (f"{prefix}*",)


@FINETUNE_MODES.register("lora")
def _lora(blocks: Sequence[tuple[str, ...]], num_blocks: int, prefix: str) -> tuple[str, ...]:
    return (f"re:{re.escape(prefix)}(?!.*\\.lora_).*",)


@FINETUNE_MODES.register("last-k")
def _last_k(blocks: Sequence[tuple[str, ...]], num_blocks: int, prefix: str) -> tuple[str, ...]:
    if not blocks:
        raise ValueError("finetune 'last-k' needs a backbone that reports its blocks")
    trainable = [name for block in blocks[-num_blocks:] for name in block]
    alternatives = "|".join(re.escape(name) for name in trainable)
    return (f"re:{re.escape(prefix)}(?!(?:{alternatives})\\.).*",)


def finetune_frozen_patterns(
    mode: str,
    blocks: Sequence[tuple[str, ...]] = (),
    num_blocks: int = 1,
    prefix: str = "backbone.",
) -> tuple[str, ...]:
    """Frozen-scope patterns a fine-tuning mode adds in front of the run's own rules.

    Parameters
    ----------
    mode : str
        A name in :data:`FINETUNE_MODES`: ``full`` (nothing frozen), ``frozen``
        (the whole backbone: linear probing), ``last-k`` (all but the last
        ``num_blocks`` blocks, including embeddings and anything outside the
        blocks) or ``lora`` (all but the LoRA adapters).
    blocks : sequence of tuples of str
        The backbone's blocks, input to output (``Backbone.blocks()``), as
        module-name prefixes relative to the backbone.
    num_blocks : int
        ``k`` of ``last-k``.
    prefix : str
        Where the backbone sits in the model's state_dict.

    Raises
    ------
    ValueError
        For an unknown mode (with a "did you mean" hint), or ``last-k`` without blocks.
    """
    try:
        frozen_patterns = FINETUNE_MODES.get(mode)
    except RegistryError as exc:
        raise ValueError(str(exc)) from None
    return frozen_patterns(blocks, num_blocks, prefix)
