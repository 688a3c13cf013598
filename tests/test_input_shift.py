"""Input shifts (feature skew): each shift by hand, per-client levels, and the federation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedmtl.config import ConfigError, build_config, partition_spec
from fedmtl.data.partition_spec import PartitionSpec
from fedmtl.data.shifts import (
    INPUT_SHIFTS,
    SHIFT_CHOICES,
    client_levels,
    contrast,
    invert,
    noise,
    rotate,
    shift_inputs,
    shifts_for,
)
from tests.federation_helpers import one_task_federation

RANGE01 = (0.0, 1.0)


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _image() -> np.ndarray:
    # one image, one channel, 2x2: [[1, 2], [3, 4]]
    return np.array([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=np.float32)


# --- each shift on a tiny array --------------------------------------------


def test_rotate_by_90_turns_a_2x2_image_counter_clockwise() -> None:
    out = rotate(_image(), 1.0, 90.0, _rng(), (0.0, 4.0))
    np.testing.assert_allclose(out, [[[[2.0, 4.0], [1.0, 3.0]]]], atol=1e-6)


def test_rotate_scales_the_angle_by_the_level() -> None:
    # level 0.5 of strength 180 is 90 degrees; level 0 leaves the image alone
    np.testing.assert_allclose(
        rotate(_image(), 0.5, 180.0, _rng(), (0.0, 4.0)), [[[[2.0, 4.0], [1.0, 3.0]]]], atol=1e-6
    )
    np.testing.assert_allclose(rotate(_image(), 0.0, 180.0, _rng(), (0.0, 4.0)), _image())


def test_rotate_by_180_on_3x3_and_background_fill() -> None:
    img = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    np.testing.assert_allclose(rotate(img, 1.0, 180.0, _rng(), (0.0, 8.0)), img[..., ::-1, ::-1])
    # 45 degrees on 3x3: the corners read from outside the image -> background (range min)
    out = rotate(np.ones((1, 1, 3, 3), np.float32), 1.0, 45.0, _rng(), (-1.0, 1.0))
    assert out[0, 0, 1, 1] == pytest.approx(1.0)  # the centre stays
    assert out[0, 0, 0, 0] < 1.0  # a corner mixes in background


def test_invert_maps_x_to_min_plus_max_minus_x_above_the_threshold() -> None:
    x = np.array([[0.0, 0.25, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(invert(x, 1.0, 0.5, _rng(), RANGE01), [[1.0, 0.75, 0.0]])
    np.testing.assert_allclose(invert(x, 1.0, 0.5, _rng(), (0.0, 2.0)), [[2.0, 1.75, 1.0]])
    # level 0.5 is not above 1 - 0.5: unchanged (a copy)
    out = invert(x, 0.5, 0.5, _rng(), RANGE01)
    np.testing.assert_array_equal(out, x)
    assert out is not x


def test_contrast_shrinks_each_input_towards_its_mean() -> None:
    x = np.array([[0.0, 1.0], [2.0, 2.0]], dtype=np.float32)  # means 0.5 and 2
    out = contrast(x, 1.0, 0.5, _rng(), RANGE01)  # factor 1 - 0.5 = 0.5
    np.testing.assert_allclose(out, [[0.25, 0.75], [2.0, 2.0]])
    np.testing.assert_allclose(contrast(x, 0.0, 0.5, _rng(), RANGE01), x)


def test_noise_is_seeded_and_has_the_configured_std() -> None:
    x = np.zeros((50, 1, 20, 20), dtype=np.float32)  # 20,000 pixels
    out = noise(x, 0.5, 0.4, np.random.default_rng(3), (0.0, 2.0))  # std 0.5 * 0.4 * 2 = 0.4
    assert out.std() == pytest.approx(0.4, rel=0.03)
    assert abs(out.mean()) < 0.02
    np.testing.assert_array_equal(out, noise(x, 0.5, 0.4, np.random.default_rng(3), (0.0, 2.0)))
    assert not np.array_equal(out, noise(x, 0.5, 0.4, np.random.default_rng(4), (0.0, 2.0)))
    np.testing.assert_array_equal(noise(x, 0.0, 0.4, _rng(), RANGE01), x)


@pytest.mark.parametrize("name", shifts_for("image"))
def test_every_image_shift_keeps_shape_and_leaves_its_input_alone(name: str) -> None:
    x = np.random.default_rng(1).random((3, 1, 4, 4)).astype(np.float32)
    before = x.copy()
    strength = INPUT_SHIFTS.get(name).max_strength or 1.0
    out = shift_inputs(
        name, x, level=1.0, strength=strength, seed=0, client_id=0, split=0, value_range=RANGE01
    )
    assert out.shape == x.shape
    assert out.dtype == np.float32
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("name", shifts_for("text"))
def test_every_text_shift_keeps_its_texts_type_and_labels_alone(name: str) -> None:
    x = np.empty(3, dtype=object)
    x[:] = ["Every word here", "may change", "or not, 1 2 3"]
    before = x.tolist()
    strength = INPUT_SHIFTS.get(name).max_strength or 1.0
    out = shift_inputs(
        name, x, level=1.0, strength=strength, seed=0, client_id=0, split=0, value_range=(0, 0)
    )
    assert out.shape == x.shape and out.dtype == object
    assert all(isinstance(t, str) for t in out) and out.tolist() != before
    assert x.tolist() == before


def test_choices_are_none_and_the_registry() -> None:
    assert list(SHIFT_CHOICES) == [
        "none",
        "contrast",
        "invert",
        "noise",
        "rotate",
        "typos",
        "vocabulary",
    ]
    assert shifts_for("image") == ["contrast", "invert", "noise", "rotate"]
    assert shifts_for("vector") == ["noise"]
    assert shifts_for("text") == ["typos", "vocabulary"]
    assert "rotate" in SHIFT_CHOICES and "none" in SHIFT_CHOICES and "rot" not in SHIFT_CHOICES


# --- levels ------------------------------------------------------------------


def test_levels_per_group_are_evenly_spaced_and_seeded() -> None:
    levels = client_levels(12, 3, seed=0)
    assert sorted(set(levels.tolist())) == [0.0, 0.5, 1.0]
    assert [int((levels == v).sum()) for v in (0.0, 0.5, 1.0)] == [4, 4, 4]
    np.testing.assert_array_equal(levels, client_levels(12, 3, seed=0))
    assert not np.array_equal(levels, client_levels(12, 3, seed=1))


def test_levels_per_client_and_one_group() -> None:
    per_client = client_levels(5, 0, seed=0)
    assert sorted(per_client.tolist()) == [0.0, 0.25, 0.5, 0.75, 1.0]
    np.testing.assert_array_equal(client_levels(4, 1, seed=0), np.ones(4))
    with pytest.raises(ValueError, match="groups"):
        client_levels(4, 5, seed=0)


# --- the federation ------------------------------------------------------------


def _spec(**changes: object) -> PartitionSpec:
    base = PartitionSpec(dataset="digits", tasks=("digit", "parity", "ge5"), num_clients=6)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_rotate_shifts_each_client_by_its_group_level_train_and_test() -> None:
    plain = one_task_federation(_spec())
    spec = _spec(input_shift="rotate", input_shift_strength=180.0, input_shift_groups=2)
    shifted = one_task_federation(spec)
    levels = client_levels(6, 2, seed=0)
    for before, after, level in zip(plain, shifted, levels, strict=True):
        np.testing.assert_array_equal(after.y_train, before.y_train)  # labels untouched
        np.testing.assert_array_equal(after.y_test, before.y_test)
        if level == 0.0:  # the level-0 group keeps its inputs
            np.testing.assert_allclose(after.x_train, before.x_train, atol=1e-6)
        else:  # level 1: 180 degrees, on train and test
            np.testing.assert_allclose(after.x_train, before.x_train[..., ::-1, ::-1], atol=1e-5)
            np.testing.assert_allclose(after.x_test, before.x_test[..., ::-1, ::-1], atol=1e-5)
    assert set(levels.tolist()) == {0.0, 1.0}


def test_invert_shifts_clients_in_the_inverted_group_only() -> None:
    plain = one_task_federation(_spec())
    spec = _spec(input_shift="invert", input_shift_strength=0.5, input_shift_groups=2)
    shifted = one_task_federation(spec)
    levels = client_levels(6, 2, seed=0)
    for before, after, level in zip(plain, shifted, levels, strict=True):
        expected = 1.0 - before.x_train if level == 1.0 else before.x_train  # digits in [0, 1]
        np.testing.assert_allclose(after.x_train, expected, atol=1e-6)


def test_noise_is_per_client_reproducible_and_keyed_by_the_spec() -> None:
    spec = _spec(input_shift="noise", input_shift_strength=0.2)
    first, again = one_task_federation(spec), one_task_federation(replace(spec))
    plain = one_task_federation(_spec())
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.x_train, b.x_train)
    levels = client_levels(6, 0, seed=0)
    for before, after, level in zip(plain, first, levels, strict=True):
        diff = (after.x_train - before.x_train).ravel()
        assert diff.std() == pytest.approx(0.2 * level, abs=0.02)
    # another seed gives other levels or other noise; the default spec is a distinct cache key
    other = one_task_federation(_spec(input_shift="noise", input_shift_strength=0.2, seed=1))
    assert not np.array_equal(other[0].x_train[:5], first[0].x_train[:5])
    assert _spec() != spec and hash(spec) == hash(replace(spec))


def test_the_default_spec_leaves_inputs_as_loaded() -> None:
    cfg = build_config({})
    spec = partition_spec(cfg)
    assert (spec.input_shift, spec.input_shift_strength, spec.input_shift_groups) == (
        "none",
        0.0,
        0,
    )
    assert spec == _spec(num_clients=12)


# --- config ----------------------------------------------------------------------


def test_text_shift_config_reaches_the_partition_spec() -> None:
    cfg = build_config(
        {
            "dataset": "wordnet-fortunes",
            "tasks": ["noun-supersense"],
            "input-shift": "vocabulary",
            "input-shift-strength": 0.5,
            "input-shift-groups": 2,
        }
    )
    spec = partition_spec(cfg)
    assert (spec.input_shift, spec.input_shift_strength, spec.input_shift_groups) == (
        "vocabulary",
        0.5,
        2,
    )


def test_config_keys_reach_the_partition_spec() -> None:
    cfg = build_config(
        {"input-shift": "contrast", "input-shift-strength": 0.5, "input-shift-groups": 3}
    )
    spec = partition_spec(cfg)
    assert (spec.input_shift, spec.input_shift_strength, spec.input_shift_groups) == (
        "contrast",
        0.5,
        3,
    )


@pytest.mark.parametrize(
    ("values", "key", "match"),
    [
        ({"input-shift": "rotat"}, "input-shift", "did you mean 'rotate'"),
        ({"input-shift": "rotate"}, "input-shift-strength", "strength > 0"),
        (
            {"input-shift": "rotate", "input-shift-strength": 400.0},
            "input-shift-strength",
            "<= 360",
        ),
        ({"input-shift": "invert", "input-shift-strength": 1.5}, "input-shift-strength", "<= 1"),
        ({"input-shift-strength": float("nan")}, "input-shift-strength", "finite"),
        ({"input-shift-strength": float("inf")}, "input-shift-strength", "finite"),
        ({"input-shift-strength": -1.0}, "input-shift-strength", ">= 0"),
        ({"input-shift-groups": -1}, "input-shift-groups", ">= 0"),
        ({"input-shift-groups": 13}, "input-shift-groups", "num-clients"),
        (
            {
                "dataset": "wordnet-fortunes",
                "tasks": ["noun-supersense"],
                "input-shift": "rotate",
                "input-shift-strength": 10.0,
            },
            "input-shift",
            r"text inputs: use one of \['none', 'typos', 'vocabulary'\]",
        ),
        (
            {"input-shift": "typos", "input-shift-strength": 0.3},
            "input-shift",
            r"\['text'\] inputs, but dataset 'digits' has image inputs: use one of \['none', "
            r"'contrast', 'invert', 'noise', 'rotate'\]",
        ),
        (
            {
                "dataset": "wordnet-fortunes",
                "tasks": ["noun-supersense"],
                "input-shift": "typos",
                "input-shift-strength": 1.5,
            },
            "input-shift-strength",
            r"<= 1.0 \(the largest per-word typo probability",
        ),
        (
            {
                "dataset": "wordnet-fortunes",
                "tasks": ["noun-supersense"],
                "input-shift": "vocabulary",
            },
            "input-shift-strength",
            "strength > 0",
        ),
    ],
)
def test_bad_values_name_the_key(values: dict[str, object], key: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        build_config(values)
    assert info.value.key == key
