"""Docs that must not drift from the code."""

from pathlib import Path

from fedmtl.config import known_keys, load_experiment

ROOT = Path(__file__).resolve().parent.parent


def test_every_config_key_is_documented() -> None:
    text = (ROOT / "simulations" / "README.md").read_text()
    keys = known_keys()
    missing = [k for k in keys if f"| `{k}` |" not in text]
    assert len(keys) > 30
    assert missing == []


def test_every_shipped_experiment_loads() -> None:
    files = sorted((ROOT / "simulations").glob("*.toml"))
    assert files, "no experiment files found"
    for path in files:
        assert load_experiment(path).num_rounds >= 1
