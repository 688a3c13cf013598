"""One registry pattern for everything pluggable.

Datasets, backbones, partitioners, fine-tuning modes and strategies each keep a
:class:`Registry`: unique lower-case names, registered in one visible line,
"did you mean" on a typo. Iterating a registry gives its names, sorted.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


def is_valid_name(name: str) -> bool:
    """Whether ``name`` passes the registry name rule (lower-case, digits, ``-_.``)."""
    return bool(_NAME.match(name))


class RegistryError(KeyError):
    """An unknown or duplicate name in a registry."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps unique lower-case names to objects, with "did you mean" on a typo.

    Parameters
    ----------
    kind : str
        What the registry holds, used in error messages ("dataset", "backbone").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Register the decorated object under ``name`` (unique, lower-case)."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name``; duplicates and bad names are rejected."""
        if not is_valid_name(name):
            raise RegistryError(
                f"{self.kind} name '{name}' must be lower-case letters, digits, '-', '_' or '.'"
            )
        if name in self._items:
            raise RegistryError(f"{self.kind} '{name}' is already registered")
        self._items[name] = obj

    def get(self, name: str) -> T:
        """Return the object registered under ``name``."""
        try:
            return self._items[name]
        except KeyError:
            # names() rather than _items: a subclass may list names it loads lazily.
            names = self.names()
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RegistryError(f"unknown {self.kind} '{name}'{hint}; available: {names}") from None

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        """The registered names, sorted (as :meth:`names`)."""
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
