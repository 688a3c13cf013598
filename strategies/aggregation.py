"""Aggregation maths on named numpy arrays (no Flower types, no torch)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

NDArrays = Mapping[str, npt.NDArray[np.generic]]


def weighted_average(
    updates: Sequence[NDArrays], weights: Sequence[float]
) -> dict[str, npt.NDArray[np.generic]]:
    """Average named arrays with non-negative ``weights`` (normalised to sum 1).

    Keys and shapes must agree across updates; integer arrays are averaged in
    float64 and rounded back to their dtype.
    """
    if not updates:
        raise ValueError("nothing to average")
    if len(updates) != len(weights):
        raise ValueError(f"{len(updates)} updates but {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
    keys = list(updates[0])
    for update in updates[1:]:
        if list(update) != keys and set(update) != set(keys):
            raise ValueError(f"updates hold different keys: {sorted(set(update) ^ set(keys))}")
    out: dict[str, npt.NDArray[np.generic]] = {}
    for key in keys:
        first = np.asarray(updates[0][key])
        acc = np.zeros(first.shape, dtype=np.float64)
        for update, weight in zip(updates, weights, strict=True):
            value = np.asarray(update[key])
            if value.shape != first.shape:
                raise ValueError(f"'{key}' has shapes {first.shape} and {value.shape}")
            acc += value.astype(np.float64) * (weight / total)
        out[key] = cast_like(acc, first.dtype)
    return out


def cast_like(
    value: npt.NDArray[np.generic], dtype: np.dtype[np.generic]
) -> npt.NDArray[np.generic]:
    """Cast ``value`` to ``dtype``, rounding when the target is an integer type."""
    if np.issubdtype(dtype, np.integer):
        rounded: npt.NDArray[np.generic] = np.rint(value).astype(dtype)
        return rounded
    cast: npt.NDArray[np.generic] = np.asarray(value).astype(dtype, copy=False)
    return cast
