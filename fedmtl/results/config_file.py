"""A run's ``config.toml``: flat experiment values written as TOML (re-runnable)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def toml_value(value: Any) -> str:
    """One value in TOML syntax (strings, numbers, booleans, lists, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(values: Mapping[str, Any]) -> str:
    """Write a flat mapping as TOML (strings, numbers, booleans, lists, inline tables)."""
    return "".join(f"{key} = {toml_value(value)}\n" for key, value in values.items())
