"""Skip markers for tests that need an optional extra (``pytest -ra`` names what was skipped).

``pip install -e '.[dev]'`` alone runs every other test; the README's test command
installs every extra, so nothing is skipped there.
"""

from __future__ import annotations

import importlib.util

import pytest


def _missing(*modules: str) -> bool:
    return any(importlib.util.find_spec(name) is None for name in modules)


needs_text = pytest.mark.skipif(
    _missing("transformers"), reason="needs the 'text' extra: pip install -e '.[text]'"
)
needs_vision = pytest.mark.skipif(
    _missing("torchvision", "timm"), reason="needs the 'vision' extra: pip install -e '.[vision]'"
)
needs_lora = pytest.mark.skipif(
    _missing("peft"), reason="needs the 'lora' extra: pip install -e '.[lora]'"
)
