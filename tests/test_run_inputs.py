"""A run whose data, weights or backbone cannot be had, or whose plug-ins return what
fedmtl cannot use, stops before Ray starts, naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedmtl.config import ConfigError, build_config
from fedmtl.data.registry import (
    DATASETS,
    BaseData,
    DatasetEntry,
    DatasetSpec,
    TaskSpec,
    identity_labels,
)
from fedmtl.models import BACKBONES, Backbone, BackboneEntry
from fedmtl.run_model import check_run_inputs, initial_model


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


# ---------------------------------------------------------------- plug-ins checked once per run


def _register_dataset(monkeypatch: pytest.MonkeyPatch, name: str, x: Any, y: Any) -> None:
    """A one-task image dataset returning ``x`` and ``y``, registered for this test only."""
    monkeypatch.setattr(DATASETS, "_items", dict(DATASETS._items))
    spec = DatasetSpec(
        name=name,
        load=lambda: BaseData(np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)),
        tasks={"t": TaskSpec("t", 2, identity_labels)},
        source_fraction=0.0,
    )
    DATASETS.add(name, DatasetEntry(lambda options: spec))


class _Wide(Backbone):
    """Reports 8 features but returns ``width`` (NaN when ``poison``)."""

    def __init__(self, width: int, poison: bool) -> None:
        super().__init__()
        self.feature_dim = 8
        self.width, self.poison = width, poison
        self.proj = torch.nn.Linear(64, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.proj(x.flatten(1))
        return out * float("nan") if self.poison else out


def _register_backbone(
    monkeypatch: pytest.MonkeyPatch, name: str, width: int, poison: bool
) -> None:
    monkeypatch.setattr(BACKBONES, "_items", dict(BACKBONES._items))
    BACKBONES.add(name, BackboneEntry(lambda pretrained, options: _Wide(width, poison)))


@pytest.mark.parametrize(
    ("name", "x", "y", "fragment"),
    [
        ("bad-labels-test", np.zeros((40, 1, 8, 8)), np.arange(40) % 5, "outside 0..1"),
        ("nan-inputs-test", np.full((40, 1, 8, 8), np.nan), np.arange(40) % 2, "NaN or infinite"),
    ],
)
def test_a_dataset_returning_unusable_examples_is_refused(
    name: str, x: Any, y: Any, fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare (specs are cached by name: one name per case)
    _register_dataset(monkeypatch, name, x, y)
    cfg = build_config({"dataset": name, "tasks": ["t"], "num-clients": 2, "partitioner": "iid"})

    # Execute
    with pytest.raises(ConfigError, match=fragment) as caught:
        check_run_inputs(cfg)

    # Assert
    assert caught.value.key == "dataset"
    assert f"dataset '{name}', client 0 (t), train" in str(caught.value)


@pytest.mark.parametrize(
    ("width", "poison", "fragment"),
    [(4, False, r"returned \(2, 4\) for 2 inputs"), (8, True, "NaN or infinite features")],
)
def test_a_backbone_returning_unusable_features_is_refused(
    width: int, poison: bool, fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    _register_backbone(monkeypatch, f"wide-test-{width}", width, poison)
    cfg = build_config({"backbone": f"wide-test-{width}", "pretrained": "none"})

    # Execute
    with pytest.raises(ConfigError, match=fragment) as caught:
        check_run_inputs(cfg)

    # Assert
    assert caught.value.key == "backbone"


def test_checking_the_run_leaves_its_initial_model_as_it_was() -> None:
    # Prepare: the default run (digits-cnn, with batch-norm statistics)
    cfg = build_config({})
    model = initial_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]

    # Execute
    check_run_inputs(cfg)

    # Assert
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == modes


def test_partition_problems_name_the_partitioner_key() -> None:
    cfg = build_config({"partitioner": "pathological", "classes-per-client": 11})
    with pytest.raises(ConfigError, match="only 10") as caught:
        check_run_inputs(cfg)
    assert caught.value.key == "classes-per-client"
