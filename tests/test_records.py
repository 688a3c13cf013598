"""Tests for :mod:`fedmtl.records` (the wire format)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.app.typing import ConfigRecordValues

from fedmtl.records import (
    ARRAYS,
    CLIENT,
    KNOWN_KEYS,
    METRICS,
    TASK_ARRAYS,
    ClientInfo,
    Instruction,
    InstructionError,
    from_record,
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


def test_metric_values_drops_lists_and_defaults_to_empty() -> None:
    content = RecordDict({METRICS: MetricRecord({"loss": 1, "hist": [1.0, 2.0]})})
    assert metric_values(content) == {"loss": 1.0}
    assert metric_values(RecordDict()) == {}


def test_client_info_with_a_wrongly_typed_id_names_the_key() -> None:
    content = RecordDict({CLIENT: ConfigRecord({"client-id": "seven", "task": "digit"})})
    with pytest.raises(InstructionError, match="'client-id' must be int"):
        ClientInfo.from_content(content)


def test_instruction_decodes_every_known_key_with_its_type() -> None:
    # Prepare
    record = ConfigRecord(
        {
            "server-round": 3,
            "local-epochs": 2,
            "batch-size": 8,
            "learning-rate": 1,  # an int is a valid float
            "proximal-mu": 0.1,
            "client-routine": "ditto",
            "head-epochs": 1,
            "head-finetune-epochs": 4,
            "personal-lambda": 0.5,
            "global-view-epochs": 1,
            "checkpoint-round": 2,
            "warmup-epochs": 3,
        }
    )
    # Execute
    decoded = Instruction.decode(record)
    # Assert
    assert decoded == Instruction(
        server_round=3,
        local_epochs=2,
        batch_size=8,
        learning_rate=1.0,
        proximal_mu=0.1,
        routine="ditto",
        head_epochs=1,
        head_finetune_epochs=4,
        personal_lambda=0.5,
        global_view_epochs=1,
        checkpoint_round=2,
        extras={"warmup-epochs": 3},
    )
    assert isinstance(decoded.learning_rate, float)
    assert len(KNOWN_KEYS) == 11 and decoded.sent_keys() == set(KNOWN_KEYS)


def test_an_empty_config_means_the_experiments_values_and_the_default_routine() -> None:
    decoded = Instruction.from_content(RecordDict())
    assert decoded == Instruction()
    assert decoded.routine == "default" and decoded.server_round == 0
    assert decoded.local_epochs is None and decoded.checkpoint_round is None
    assert decoded.sent_keys() == frozenset() and len(decoded.encode()) == 0


@pytest.mark.parametrize(
    ("entries", "key", "words"),
    [
        ({"local-epochs": 1.5}, "local-epochs", "must be int"),
        ({"server-round": True}, "server-round", "must be int"),
        ({"learning-rate": float("nan")}, "learning-rate", "finite"),
        ({"proximal-mu": float("inf")}, "proximal-mu", "finite"),
        ({"personal-lambda": "0.1"}, "personal-lambda", "must be float"),
        ({"learning-rate": 0.0}, "learning-rate", "> 0"),
        ({"batch-size": 0}, "batch-size", ">= 1"),
        ({"head-epochs": -1}, "head-epochs", ">= 0"),
        ({"client-routine": 3}, "client-routine", "must be str"),
        ({"client-routine": ""}, "client-routine", "empty"),
    ],
)
def test_a_bad_value_names_its_key(
    entries: dict[str, ConfigRecordValues], key: str, words: str
) -> None:
    with pytest.raises(InstructionError, match=words) as caught:
        Instruction.decode(ConfigRecord(entries))
    assert caught.value.key == key
    assert f"'{key}'" in str(caught.value)


def test_extras_are_read_with_typed_accessors() -> None:
    # Prepare
    extras: dict[str, ConfigRecordValues] = {
        "warmup-epochs": 2, "step": 0.5, "mode": "fast", "on": True, "bad": float("nan")
    }  # fmt: skip
    decoded = Instruction.decode(ConfigRecord(extras))
    # Assert
    assert decoded.extra_int("warmup-epochs", 1) == 2
    assert decoded.extra_int("missing", 7) == 7
    assert decoded.extra_float("step", 1.0) == 0.5
    assert decoded.extra_float("warmup-epochs", 1.0) == 2.0
    assert decoded.extra_str("mode", "slow") == "fast"
    assert decoded.extra_bool("on", False) is True
    with pytest.raises(InstructionError, match="'mode' must be int"):
        decoded.extra_int("mode", 1)
    with pytest.raises(InstructionError, match="'on' must be int"):
        decoded.extra_int("on", 1)
    with pytest.raises(InstructionError, match="'bad' must be finite"):
        decoded.extra_float("bad", 1.0)


def test_encode_writes_what_differs_from_the_defaults_and_round_trips() -> None:
    # Prepare
    sent = Instruction(local_epochs=2, batch_size=16, learning_rate=0.05, extras={"x": 1})
    # Execute
    record = sent.encode()
    # Assert
    assert dict(record) == {"local-epochs": 2, "batch-size": 16, "learning-rate": 0.05, "x": 1}
    assert Instruction.decode(record) == sent
    with pytest.raises(InstructionError, match="'head-epochs' is a known key"):
        Instruction(extras={"head-epochs": 2})
    with pytest.raises(InstructionError, match="'learning-rate' must be finite"):
        Instruction(learning_rate=float("inf"))
