"""A run whose data, weights or backbone cannot be had stops before Ray starts, naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedmtl.config import ConfigError, build_config
from fedmtl.run_model import check_run_inputs


def _text(**values: Any) -> dict[str, Any]:
    return {
        "dataset": "wordnet-fortunes",
        "tasks": ["noun-supersense", "fortune-topic"],
        "num-clients": 2,
        "backbone": "text-bow",
        "pretrained": "none",
        "max-examples-per-task": 40,
        **values,
    }


def test_missing_dataset_files_name_the_option_and_the_package(tmp_path: Path) -> None:
    cfg = build_config(_text(**{"dataset-options": {"wordnet-dir": str(tmp_path / "none")}}))
    with pytest.raises(ConfigError, match="wordnet-base") as caught:
        check_run_inputs(cfg)
    assert caught.value.key == "dataset-options"


def test_a_backbone_for_other_inputs_is_refused() -> None:
    cfg = build_config({"backbone": "text-bow", "pretrained": "none"})
    with pytest.raises(ConfigError, match="takes text inputs") as caught:
        check_run_inputs(cfg)
    assert caught.value.key == "backbone"


def test_missing_weights_file_names_pretrained(tmp_path: Path) -> None:
    cfg = build_config({"pretrained": str(tmp_path / "missing.pt")})
    with pytest.raises(ConfigError, match=r"missing\.pt") as caught:
        check_run_inputs(cfg)
    assert caught.value.key == "pretrained"


def test_a_backbone_without_pretrained_weights_says_what_to_set() -> None:
    cfg = build_config(_text(pretrained="builtin"))
    with pytest.raises(ConfigError, match="pretrained = 'none'") as caught:
        check_run_inputs(cfg)
    assert caught.value.key == "backbone"


def test_a_good_text_run_passes() -> None:
    check_run_inputs(build_config(_text()))
