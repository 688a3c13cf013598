"""``label-noise``: seeded noise on training targets only, per kind, validated naming the key."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from fedmtl.config import ConfigError, load_experiment, partition_spec
from fedmtl.data import build_federation
from fedmtl.data.digits import DIGIT_TASKS
from fedmtl.data.label_noise import (
    LabelNoiseError,
    check_label_noise,
    flip_labels,
    gaussian_targets,
    noisy_train_targets,
)
from fedmtl.data.partition_spec import PartitionSpec
from fedmtl.data.partitioners import PartitionError

# Every client holds all three tasks: one classification with 2 classes, one with 10, a regression.
CLEAN = PartitionSpec(
    dataset="digits", tasks=("digit", "ge5", "digit-value"), num_clients=4, tasks_per_client=3
)


def _noisy(**levels: float) -> PartitionSpec:
    pairs = tuple(sorted((task.replace("_", "-"), level) for task, level in levels.items()))
    return replace(CLEAN, label_noise=pairs)


def test_flip_labels_changes_exactly_the_rounded_fraction_to_other_classes() -> None:
    y = np.arange(20, dtype=np.int64) % 10  # 20 labels over the 10 digit classes
    rng = np.random.default_rng(0)

    out = flip_labels(y, 0.35, DIGIT_TASKS["digit"], rng)  # round(0.35 * 20) = 7

    changed = out != y
    assert changed.sum() == 7
    assert out.dtype == np.int64 and ((out >= 0) & (out < 10)).all()
    assert np.array_equal(y, np.arange(20) % 10)  # the input is untouched


def test_two_classes_at_level_one_invert_every_label() -> None:
    y = np.array([0, 1, 1, 0, 1], dtype=np.int64)

    out = flip_labels(y, 1.0, DIGIT_TASKS["ge5"], np.random.default_rng(3))

    assert out.tolist() == [1, 0, 0, 1, 0]  # the only other class of a binary task


def test_gaussian_targets_scale_with_the_task_std() -> None:
    y = np.full(20_000, 4.0)
    task = DIGIT_TASKS["digit-value"]  # target std 2.8935

    out = gaussian_targets(y, 0.5, task, np.random.default_rng(1))

    assert out.dtype == np.float64
    assert abs(float(np.mean(out)) - 4.0) < 0.05
    assert abs(float(np.std(out)) - 0.5 * task.target_std) < 0.03


def test_same_seed_same_noise_and_other_clients_other_noise() -> None:
    y = np.arange(100, dtype=np.int64) % 2
    task = DIGIT_TASKS["ge5"]

    first = noisy_train_targets(y, 0.3, task, seed=5, client_id=2)
    again = noisy_train_targets(y, 0.3, task, seed=5, client_id=2)
    other_client = noisy_train_targets(y, 0.3, task, seed=5, client_id=3)
    other_seed = noisy_train_targets(y, 0.3, task, seed=6, client_id=2)

    assert np.array_equal(first, again)
    assert not np.array_equal(first, other_client)
    assert not np.array_equal(first, other_seed)


def test_noise_touches_the_noisy_tasks_training_targets_only() -> None:
    clean = build_federation(CLEAN)

    noisy = build_federation(_noisy(ge5=0.4, digit_value=0.5))

    assert len(noisy) == len(clean) == 4
    flipped = []
    for clean_parts, noisy_parts in zip(clean, noisy, strict=True):
        for before, after in zip(clean_parts, noisy_parts, strict=True):
            assert after.task == before.task
            assert np.array_equal(after.x_train, before.x_train)
            assert np.array_equal(after.x_test, before.x_test)
            assert np.array_equal(after.y_test, before.y_test)  # tests stay clean
            if before.task == "digit":
                assert np.array_equal(after.y_train, before.y_train)
            elif before.task == "ge5":
                changed = int((after.y_train != before.y_train).sum())
                assert changed == round(0.4 * before.num_train)
                flipped.append(changed)
            else:
                assert after.y_train.dtype == np.float64
                assert not np.allclose(after.y_train, before.y_train)
    assert len(flipped) == 4


def test_clients_get_different_noise_in_one_federation() -> None:
    noisy = build_federation(_noisy(digit_value=1.0))
    clean = build_federation(CLEAN)

    noise = [n[2].y_train - c[2].y_train for n, c in zip(noisy, clean, strict=True)]

    assert noise[0][:5].tolist() != noise[1][:5].tolist()
    pooled = np.concatenate(noise)
    assert abs(float(np.std(pooled)) / DIGIT_TASKS["digit-value"].target_std - 1.0) < 0.1


def test_no_key_and_level_zero_leave_every_array_identical() -> None:
    cfg = load_experiment("digits", {"num-clients": 4})
    assert partition_spec(cfg).label_noise == ()
    clean = build_federation(CLEAN)

    zero = build_federation(_noisy(ge5=0.0, digit_value=0.0))

    for clean_parts, zero_parts in zip(clean, zero, strict=True):
        for before, after in zip(clean_parts, zero_parts, strict=True):
            for name in ("x_train", "y_train", "x_test", "y_test"):
                assert np.array_equal(getattr(after, name), getattr(before, name))


def test_partition_spec_holds_the_table_as_sorted_pairs() -> None:
    cfg = load_experiment("digits_multitask", {"label-noise": {"parity": 0.25, "digit-value": 1}})

    assert partition_spec(cfg).label_noise == (("digit-value", 1.0), ("parity", 0.25))


@pytest.mark.parametrize(
    ("levels", "needle"),
    [
        ({"ge5": 0.1}, "not in 'tasks'"),
        ({"parity": 1.5}, "<= 1"),
        ({"parity": -0.1}, ">= 0"),
        ({"digit-value": -1.0}, ">= 0"),
        ({"parity": True}, "finite number"),
        ({"digit-value": "high"}, "finite number"),
        ({"parity": math.nan}, "finite"),
        ({"digit-value": math.inf}, "finite"),
    ],
)
def test_bad_levels_are_refused_naming_the_key(levels: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match="label-noise") as caught:
        load_experiment("digits_multitask", {"label-noise": levels})

    assert caught.value.key == "label-noise"
    assert needle in str(caught.value)


def test_a_regression_level_has_no_upper_bound() -> None:
    cfg = load_experiment("digits_multitask", {"label-noise": {"digit-value": 3.0}})

    assert dict(cfg.label_noise) == {"digit-value": 3.0}


def test_the_data_layer_refuses_a_bad_spec_naming_the_key() -> None:
    with pytest.raises(PartitionError, match=r"'ge5' = 2\.0") as caught:
        build_federation(_noisy(ge5=2.0))

    assert caught.value.key == "label-noise"
    with pytest.raises(LabelNoiseError, match="not in 'tasks'"):
        check_label_noise({"mod3": 0.1}, CLEAN.tasks, DIGIT_TASKS)
