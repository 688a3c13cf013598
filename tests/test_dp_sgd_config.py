"""DP-SGD's keys (``dp-sgd-*``): validation, refused combinations, Opacus imported lazily."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import pytest

from fedmtl.config import ConfigError, build_config
from fedmtl.private_training import opacus


@pytest.mark.parametrize(
    ("values", "key", "says"),
    [
        ({"dp-sgd-noise-multiplier": 0.0}, "dp-sgd-noise-multiplier", "> 0.0"),
        ({"dp-sgd-noise-multiplier": -1.0}, "dp-sgd-noise-multiplier", "> 0.0"),
        ({"dp-sgd-noise-multiplier": math.inf}, "dp-sgd-noise-multiplier", "finite"),
        ({"dp-sgd-max-grad-norm": 0.0}, "dp-sgd-max-grad-norm", "> 0.0"),
        ({"dp-sgd-max-grad-norm": math.nan}, "dp-sgd-max-grad-norm", "finite"),
        ({"dp-sgd-delta": 0.0}, "dp-sgd-delta", "> 0.0"),
        ({"dp-sgd-delta": 1.5}, "dp-sgd-delta", "<= 1.0"),
        ({"dp-sgd": True, "dp-sgd-delta": 1.0}, "dp-sgd-delta", "< 1"),
        ({"dp-sgd-accountant": "gdp"}, "dp-sgd-accountant", "'rdp', 'prv'"),
        ({"dp-sgd": "yes"}, "dp-sgd", "true or false"),
    ],
)
def test_bad_values_name_the_key(values: dict[str, Any], key: str, says: str) -> None:
    with pytest.raises(ConfigError, match=key) as err:
        build_config(values)
    assert err.value.key == key
    assert says in str(err.value)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"tasks-per-client": 2}, "tasks-per-client"),
        ({"task-weighting": "uncertainty"}, "task-weighting"),
        ({"global-view-epochs": 1}, "global-view-epochs"),
        ({"holdout-clients": 2}, "unseen-finetune-epochs"),
    ],
)
def test_combinations_outside_the_accountant_are_refused(values: dict[str, Any], key: str) -> None:
    build_config(values)  # fine without DP-SGD
    with pytest.raises(ConfigError, match="with dp-sgd = true") as err:
        build_config({"dp-sgd": True, **values})
    assert err.value.key == key


def test_defaults_are_off_and_valid() -> None:
    cfg = build_config({"dp-sgd": True})
    assert (cfg.dp_sgd_noise_multiplier, cfg.dp_sgd_max_grad_norm) == (1.0, 1.0)
    assert (cfg.dp_sgd_delta, cfg.dp_sgd_accountant) == (1e-5, "rdp")
    assert build_config({}).dp_sgd is False


def test_opacus_is_imported_only_when_dp_sgd_trains() -> None:
    code = (
        "import sys, fedmtl.client_app, fedmtl.config as c; c.load_experiment('digits'); "
        "print('opacus' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "False"


def test_a_missing_opacus_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opacus", None)  # import opacus now raises ImportError
    with pytest.raises(ImportError, match=r"fedmtl\[dpsgd\]"):
        opacus()
