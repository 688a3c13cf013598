"""Tests for :mod:`strategies.aggregation`."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.aggregation import cast_like, weighted_average


def test_weighted_average_by_hand() -> None:
    # Prepare: (1*[1,2] + 3*[3,6]) / 4 = [2.5, 5.0]
    updates = [
        {"w": np.array([1.0, 2.0], np.float32)},
        {"w": np.array([3.0, 6.0], np.float32)},
    ]

    # Execute
    out = weighted_average(updates, [1, 3])

    # Assert
    np.testing.assert_allclose(out["w"], [2.5, 5.0])
    assert out["w"].dtype == np.float32


def test_weighted_average_several_keys_and_three_updates() -> None:
    # Prepare: weights 2, 1, 1 -> 0.5, 0.25, 0.25
    updates = [
        {"a": np.array([[4.0]]), "b": np.array(8.0)},
        {"a": np.array([[0.0]]), "b": np.array(0.0)},
        {"a": np.array([[8.0]]), "b": np.array(4.0)},
    ]

    # Execute
    out = weighted_average(updates, [2.0, 1.0, 1.0])

    # Assert
    np.testing.assert_allclose(out["a"], [[4.0]])  # 2 + 0 + 2
    np.testing.assert_allclose(out["b"], 5.0)  # 4 + 0 + 1
    assert out["b"].shape == ()
    assert list(out) == ["a", "b"]


def test_weights_are_normalised_so_scale_does_not_matter() -> None:
    updates = [{"w": np.array([1.0])}, {"w": np.array([3.0])}]
    np.testing.assert_allclose(
        weighted_average(updates, [1, 3])["w"], weighted_average(updates, [100, 300])["w"]
    )


def test_zero_weight_update_is_ignored() -> None:
    updates = [{"w": np.array([1.0])}, {"w": np.array([1000.0])}]
    np.testing.assert_allclose(weighted_average(updates, [5, 0])["w"], [1.0])


def test_int_arrays_are_rounded_back_to_int_dtype() -> None:
    # Prepare: (1*[0,10] + 2*[1,20]) / 3 = [0.667, 16.667] -> [1, 17]
    updates = [
        {"n": np.array([0, 10], np.int64)},
        {"n": np.array([1, 20], np.int64)},
    ]

    # Execute
    out = weighted_average(updates, [1, 2])

    # Assert
    assert out["n"].dtype == np.int64
    np.testing.assert_array_equal(out["n"], [1, 17])


def test_int_average_is_rounded_not_truncated() -> None:
    updates = [{"n": np.array(9, np.int32)}, {"n": np.array(10, np.int32)}]
    out = weighted_average(updates, [1, 9])  # 9.9
    assert out["n"].dtype == np.int32
    assert int(out["n"]) == 10


def test_same_keys_in_another_order_are_accepted() -> None:
    updates = [
        {"a": np.array([1.0]), "b": np.array([2.0])},
        {"b": np.array([4.0]), "a": np.array([3.0])},
    ]
    out = weighted_average(updates, [1, 1])
    np.testing.assert_allclose(out["a"], [2.0])
    np.testing.assert_allclose(out["b"], [3.0])


@pytest.mark.parametrize(
    "second",
    [
        {"w": np.array([1.0]), "extra": np.array([1.0])},
        {"v": np.array([1.0])},
        {},
    ],
)
def test_mismatched_keys_raise(second: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="different keys"):
        weighted_average([{"w": np.array([1.0])}, second], [1, 1])


def test_mismatched_shapes_raise() -> None:
    updates = [{"w": np.zeros((2, 3))}, {"w": np.zeros((3, 2))}]
    with pytest.raises(ValueError, match="shapes"):
        weighted_average(updates, [1, 1])


@pytest.mark.parametrize(
    ("updates", "weights", "match"),
    [
        ([], [], "nothing to average"),
        ([{"w": np.zeros(1)}], [1, 2], "1 updates but 2 weights"),
        ([{"w": np.zeros(1)}, {"w": np.zeros(1)}], [0, 0], "positive sum"),
        ([{"w": np.zeros(1)}, {"w": np.zeros(1)}], [2, -1], "positive sum"),
    ],
)
def test_bad_weights_raise(
    updates: list[dict[str, np.ndarray]], weights: list[float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        weighted_average(updates, weights)


def test_cast_like() -> None:
    assert cast_like(np.array([1.6, -1.6]), np.dtype(np.int64)).tolist() == [2, -2]
    out = cast_like(np.array([1.5]), np.dtype(np.float32))
    assert out.dtype == np.float32
    assert out.tolist() == [1.5]
