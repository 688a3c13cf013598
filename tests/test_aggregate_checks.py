"""Checks on an aggregate before it is broadcast (:mod:`strategies.aggregate_checks`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import MetricRecord

from fedmtl.records import from_record, to_record
from strategies.aggregate_checks import (
    InvalidAggregateError,
    checked_shared,
    checked_task_average,
    finite_scalars,
)
from strategies.replies import spec_of

F32 = np.float32
SENT = {"backbone.w": np.zeros((2, 3), F32), "backbone.n": np.asarray(4, np.int64)}
SPEC = spec_of(SENT)


def _aggregate(**changes: np.ndarray) -> dict[str, np.ndarray]:
    # What a Flower strategy gives back: float64 means, the counter a float too
    return {"backbone.w": np.ones((2, 3)), "backbone.n": np.asarray(4.4), **changes}


def test_a_good_aggregate_comes_back_in_the_dtypes_sent() -> None:
    result = from_record(checked_shared(to_record(_aggregate()), SPEC, "FedAvg"))
    assert spec_of(result) == SPEC
    np.testing.assert_array_equal(result["backbone.w"], 1.0)
    assert int(result["backbone.n"]) == 4  # rounded back to the counter's integer dtype


BAD: dict[str, tuple[Any, str]] = {
    "none": (None, "FedAvg returned no arrays"),
    "dict": (_aggregate(), "FedAvg returned a dict, not an ArrayRecord"),
    "extra key": (
        to_record(_aggregate(**{"backbone.x": np.zeros(1)})),
        "unexpected ['backbone.x']",
    ),
    "missing key": (
        to_record({"backbone.w": np.ones((2, 3))}),
        "missing ['backbone.n']",
    ),
    "shape": (to_record(_aggregate(**{"backbone.w": np.ones(6)})), "expected float32[2, 3]"),
    "nan": (
        to_record(_aggregate(**{"backbone.w": np.full((2, 3), np.nan)})),
        "non-finite values in 'arrays' entry 'backbone.w'",
    ),
    "nan counter": (  # NaN rounded to int64 would be a huge finite number
        to_record(_aggregate(**{"backbone.n": np.asarray(np.nan)})),
        "non-finite values in 'arrays' entry 'backbone.n'",
    ),
    "float32 overflow": (  # finite in float64, inf once cast to float32
        to_record(_aggregate(**{"backbone.w": np.full((2, 3), 1e300)})),
        "non-finite values in 'arrays' entry 'backbone.w'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_an_unusable_aggregate_is_refused_with_the_strategy_and_the_fault(case: str) -> None:
    arrays, words = BAD[case]
    with pytest.raises(InvalidAggregateError) as raised:
        checked_shared(arrays, SPEC, "FedAvg")
    assert str(raised.value).startswith("FedAvg returned")
    assert words in str(raised.value)


def test_task_average_must_match_what_was_sent_and_be_finite() -> None:
    sent = {"head.w": np.zeros(3, F32)}
    good = {"head.w": np.ones(3, F32)}
    assert checked_task_average(good, sent, "digit") is good
    with pytest.raises(InvalidAggregateError, match="average of task 'digit': non-finite"):
        checked_task_average({"head.w": np.full(3, np.inf, F32)}, sent, "digit")
    with pytest.raises(InvalidAggregateError, match="expected float32"):
        checked_task_average({"head.w": np.ones(3)}, sent, "digit")


def test_only_finite_scalar_metrics_are_kept() -> None:
    metrics = MetricRecord(
        {"loss": 0.5, "clipped": 3, "bad": float("nan"), "far": float("inf"), "hist": [1.0, 2.0]}
    )
    assert finite_scalars(metrics) == {"loss": 0.5, "clipped": 3}
    assert finite_scalars(None) == {}
