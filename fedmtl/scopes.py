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
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

SCOPE_ORDER = ("frozen", "local", "task", "shared")


@dataclass(frozen=True)
class ScopeRules:
    """Name patterns per scope and the default for unmatched names."""

    frozen: tuple[str, ...] = ()
    local: tuple[str, ...] = ("heads.*",)
    task: tuple[str, ...] = ()
    shared: tuple[str, ...] = ("*",)
    default: str = "shared"

    def __post_init__(self) -> None:
        if self.default not in SCOPE_ORDER:
            raise ValueError(f"default scope '{self.default}' not in {SCOPE_ORDER}")
        for scope in SCOPE_ORDER:
            for pattern in getattr(self, scope):
                if pattern.startswith("re:"):
                    try:
                        re.compile(pattern[3:])
                    except re.error as exc:
                        raise ValueError(f"scope-{scope} pattern '{pattern}': {exc}") from None


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


FINETUNE_MODES = ("full", "frozen", "last-k", "lora")


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
        ``full`` (nothing frozen), ``frozen`` (the whole backbone: linear
        probing), ``last-k`` (all but the last ``num_blocks`` blocks, including
        embeddings and anything outside the blocks) or ``lora`` (all but the LoRA
        adapters).
    blocks : sequence of tuples of str
        The backbone's blocks, input to output (``Backbone.blocks()``), as
        module-name prefixes relative to the backbone.
    num_blocks : int
        ``k`` of ``last-k``.
    prefix : str
        Where the backbone sits in the model's state_dict.
    """
    escaped = re.escape(prefix)
    if mode == "full":
        return ()
    if mode == "frozen":
        return (f"{prefix}*",)
    if mode == "lora":
        return (f"re:{escaped}(?!.*\\.lora_).*",)
    if mode == "last-k":
        if not blocks:
            raise ValueError("finetune 'last-k' needs a backbone that reports its blocks")
        trainable = [name for block in blocks[-num_blocks:] for name in block]
        alternatives = "|".join(re.escape(name) for name in trainable)
        return (f"re:{escaped}(?!(?:{alternatives})\\.).*",)
    raise ValueError(f"unknown finetune mode '{mode}'; allowed: {list(FINETUNE_MODES)}")
