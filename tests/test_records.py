"""Tests for :mod:`fedmtl.records` (the wire format)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedmtl.records import (
    ARRAYS,
    CLIENT,
    CONFIG,
    METRICS,
    TASK_ARRAYS,
    ClientInfo,
    from_record,
    instruction_content,
    metric_values,
    record_nbytes,
    reply_content,
    to_record,
)


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "z.weight": rng.normal(size=(3, 4)).astype(np.float32),
        "a.bias": rng.normal(size=(4,)).astype(np.float32),
        "bn.num_batches_tracked": np.asarray(7, dtype=np.int64),  # 0-d scalar
        "scale": np.asarray(np.float32(2.5)),  # 0-d float
        "counts": np.arange(6, dtype=np.int64).reshape(2, 3),
        "double": rng.normal(size=(2,)),
    }


def test_round_trip_keeps_keys_order_dtypes_shapes_values(arrays: dict[str, np.ndarray]) -> None:
    # Execute
    decoded = from_record(to_record(arrays))

    # Assert
    assert list(decoded) == list(arrays)  # order, not sorted
    for key, original in arrays.items():
        got = decoded[key]
        assert isinstance(got, np.ndarray), key
        assert got.dtype == original.dtype, key
        assert got.shape == original.shape, key
        np.testing.assert_array_equal(got, original)


def test_zero_d_arrays_stay_zero_d() -> None:
    decoded = from_record(to_record({"n": np.asarray(3, dtype=np.int64)}))
    assert decoded["n"].shape == ()
    assert decoded["n"].dtype == np.int64
    assert int(decoded["n"]) == 3


def test_non_contiguous_arrays_are_encoded_by_value() -> None:
    # Prepare: a transposed (Fortran-ordered) view
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    view = base.T

    # Execute
    decoded = from_record(to_record({"t": view}))

    # Assert
    np.testing.assert_array_equal(decoded["t"], view)
    assert decoded["t"].shape == (4, 3)


def test_decoded_arrays_are_independent_of_the_source(arrays: dict[str, np.ndarray]) -> None:
    record = to_record(arrays)
    arrays["a.bias"][:] = 0.0
    assert np.any(from_record(record)["a.bias"] != 0.0)


def test_record_nbytes_counts_serialized_bytes() -> None:
    # Prepare
    small = to_record({"a": np.zeros(100, np.float32)})
    large = to_record({"a": np.zeros(200, np.float32)})
    two = to_record({"a": np.zeros(100, np.float32), "b": np.zeros(100, np.float32)})

    # Execute
    n_small, n_large, n_two = record_nbytes(small), record_nbytes(large), record_nbytes(two)

    # Assert
    assert n_small == sum(len(a.data) for a in small.values())
    assert n_small >= 400  # at least the raw float32 payload
    assert n_large - n_small == 400  # 100 more float32 values, same header
    assert n_two == 2 * n_small
    assert record_nbytes(None) == 0
    assert record_nbytes(ArrayRecord()) == 0


def test_client_info_round_trips_through_reply_content(arrays: dict[str, np.ndarray]) -> None:
    # Prepare
    info = ClientInfo(client_id=7, task="parity")
    shared = to_record({"a.bias": arrays["a.bias"]})
    task = to_record({"z.weight": arrays["z.weight"]})

    # Execute
    content = reply_content(info, {"num-examples": 42, "loss": 0.25}, shared=shared, task=task)

    # Assert
    assert ClientInfo.from_content(content) == info
    assert isinstance(content[CLIENT], ConfigRecord)
    assert isinstance(content[METRICS], MetricRecord)
    assert metric_values(content) == {"num-examples": 42.0, "loss": 0.25}
    np.testing.assert_array_equal(from_record(content[ARRAYS])["a.bias"], arrays["a.bias"])
    np.testing.assert_array_equal(from_record(content[TASK_ARRAYS])["z.weight"], arrays["z.weight"])


def test_evaluate_reply_has_no_arrays() -> None:
    content = reply_content(ClientInfo(1, "digit"), {"num-examples": 3, "accuracy": 1.0})
    assert ARRAYS not in content
    assert TASK_ARRAYS not in content
    assert len(content.array_records) == 0


def test_client_info_from_content_without_client_record_raises() -> None:
    with pytest.raises(KeyError):
        ClientInfo.from_content(RecordDict({METRICS: MetricRecord({"num-examples": 1})}))


def test_instruction_content_layout(arrays: dict[str, np.ndarray]) -> None:
    shared = to_record({"a.bias": arrays["a.bias"]})
    config = ConfigRecord({"server-round": 2})
    plain = instruction_content(shared, config)
    with_task = instruction_content(shared, config, task=to_record({"x": arrays["double"]}))
    assert set(plain.keys()) == {ARRAYS, CONFIG}
    assert set(with_task.keys()) == {ARRAYS, CONFIG, TASK_ARRAYS}


def test_metric_values_drops_lists_and_defaults_to_empty() -> None:
    content = RecordDict({METRICS: MetricRecord({"loss": 1, "hist": [1.0, 2.0]})})
    assert metric_values(content) == {"loss": 1.0}
    assert metric_values(RecordDict()) == {}
