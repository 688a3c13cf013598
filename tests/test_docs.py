"""Docs that must not drift from the code."""

from pathlib import Path

from fedmtl.assembly import load_run
from fedmtl.config import known_keys, shipped_experiments

ROOT = Path(__file__).resolve().parent.parent


def test_every_config_key_is_documented() -> None:
    text = (ROOT / "simulations" / "README.md").read_text()
    keys = known_keys()
    missing = [k for k in keys if f"| `{k}` |" not in text]
    assert len(keys) > 30
    assert missing == []


def test_every_shipped_experiment_loads() -> None:
    files = shipped_experiments()
    assert len(files) == len(list((ROOT / "simulations").glob("*.toml"))) >= 3
    for path in files:
        assert load_run(path).num_rounds >= 1  # its strategy and options checked too


def _python_blocks(markdown: str) -> list[str]:
    return [block.split("```", 1)[0] for block in markdown.split("```python\n")[1:]]


def test_readme_plugin_examples_are_the_tested_files() -> None:
    # The README quotes the example files; their tests run them, so the README's code runs too.
    blocks = _python_blocks((ROOT / "README.md").read_text())
    plugin = (ROOT / "tests" / "example_plugin.py").read_text()
    routine = (ROOT / "tests" / "example_routine.py").read_text()
    assert plugin in blocks
    assert routine[routine.index("from __future__") :] in blocks
