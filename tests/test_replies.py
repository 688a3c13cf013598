"""The pure reply checks of :mod:`strategies.replies`, called directly (no strategy, no Grid)."""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedmtl.records import (
    ARRAYS,
    CLIENT,
    METRICS,
    TASK_ARRAYS,
    ClientInfo,
    from_record,
    reply_content,
    to_record,
)
from strategies.replies import Expected, check_arrays, check_reply, spec_of, strip_reply
from tests.factories import train_reply

F32 = np.float32
SHARED = {"backbone.w": np.zeros(2, F32), "backbone.n": np.asarray(3, np.int64)}
HEAD = {"head.w": np.ones((2, 2), F32)}
EXPECTED = Expected(
    max_examples=100,
    shared=spec_of(SHARED),
    sent=SHARED,
    tasks={"a": HEAD},
    max_update_ratio=10.0,
)


def _content(
    task: str = "a",
    metrics: dict[str, float] | None = None,
    shared: dict[str, np.ndarray] | None = None,
    head: dict[str, np.ndarray] | None = HEAD,
) -> RecordDict:
    return reply_content(
        ClientInfo(7, task),
        {"num-examples": 5, "loss": 0.3} if metrics is None else metrics,
        shared=to_record(SHARED if shared is None else shared),
        task=None if head is None else to_record(head),
    )


def _shared(w: float) -> dict[str, np.ndarray]:
    return {**SHARED, "backbone.w": np.full(2, w, F32)}


def test_spec_of_names_keys_shapes_and_dtypes_of_arrays_and_records() -> None:
    want = {"backbone.w": ((2,), "float32"), "backbone.n": ((), "int64")}
    assert spec_of(SHARED) == want
    assert spec_of(to_record(SHARED)) == want


def test_check_arrays_accepts_matching_record() -> None:
    assert check_arrays(to_record(SHARED), spec_of(SHARED), ARRAYS) is None
    assert check_arrays(None, spec_of(SHARED), ARRAYS) == "'arrays' missing or not an ArrayRecord"


def test_check_arrays_rejects_an_absurd_update_but_not_a_scaled_attack() -> None:
    sent = {"w": np.full(4, 2.0, dtype=np.float32), "n": np.array(5, dtype=np.int64)}
    spec = spec_of(sent)

    def reply(w: float, n: int = 5) -> ArrayRecord:
        return to_record({"w": np.full(4, w, dtype=np.float32), "n": np.array(n, dtype=np.int64)})

    # |sent| = 4; ratio 10 allows a move of norm 40 (2 * 10 per entry over 4 entries = 40)
    assert check_arrays(reply(2.0 + 4 * 0.5), spec, "arrays", sent, 10.0) is None  # w + 4u
    assert check_arrays(reply(21.9), spec, "arrays", sent, 10.0) is None
    reason = check_arrays(reply(22.1), spec, "arrays", sent, 10.0)
    assert reason is not None and "absurd update of 'arrays'" in reason
    assert check_arrays(reply(2.0, n=10**9), spec, "arrays", sent, 10.0) is None  # counters skip
    zeros = {"w": np.zeros(4, dtype=np.float32)}

    # Received norm 0 counts as 1: a move of norm 2 is fine at ratio 10, norm 200 is not
    def from_zeros(w: float) -> str | None:
        return check_arrays(
            to_record({"w": np.full(4, w, np.float32)}), spec_of(zeros), "a", zeros, 10.0
        )

    assert from_zeros(1.0) is None
    assert from_zeros(100.0) is not None


def test_valid_train_reply_passes_and_says_who_replied() -> None:
    assert check_reply(_content(), EXPECTED, train=True) == (ClientInfo(7, "a"), None)


def test_each_fault_of_a_train_reply_has_its_reason() -> None:
    # Prepare: one fault per reply, with the words its reason must hold
    faults = {
        "no-client": (RecordDict({METRICS: MetricRecord({"num-examples": 5})}), "no 'client'"),
        "no-count": (_content(metrics={"loss": 0.1}), "no 'num-examples' in 'metrics'"),
        "too-many": (_content(metrics={"num-examples": 101}), "absurd 'num-examples' = 101"),
        "nan-loss": (_content(metrics={"num-examples": 5, "loss": np.nan}), "non-finite metric"),
        "nan-shared": (_content(shared=_shared(np.nan)), "non-finite values in 'arrays'"),
        "far-shared": (_content(shared=_shared(1e3)), "absurd update of 'arrays'"),
        "no-head": (_content(head=None), "'task-arrays' missing"),
        "inf-head": (_content(head={"head.w": np.full((2, 2), np.inf, F32)}), "'task-arrays'"),
        "head-of-c": (_content(task="c"), "task 'c' has no task scope"),
    }
    for case, (content, words) in faults.items():
        # Execute
        _, reason = check_reply(content, EXPECTED, train=True)
        # Assert
        assert reason is not None and words in reason, (case, reason)
    assert len(faults) == 9


def test_evaluate_reply_is_checked_for_metrics_only() -> None:
    # No arrays at all, which a train reply would need
    content = reply_content(ClientInfo(7, "a"), {"num-examples": 5, "loss": 0.3})
    assert check_reply(content, EXPECTED, train=False) == (ClientInfo(7, "a"), None)
    assert check_reply(content, EXPECTED, train=True)[1] == "'arrays' missing or not an ArrayRecord"


def test_without_the_sent_arrays_updates_are_not_measured() -> None:
    lenient = Expected(100, spec_of(SHARED), tasks={"a": HEAD})
    assert check_reply(_content(shared=_shared(1e6)), lenient, train=True)[1] is None


def test_strip_reply_keeps_what_a_stock_strategy_reads_and_the_client_identity() -> None:
    # Prepare: extra metrics and the task arrays, which Flower's strategies must not see
    message = train_reply(3, "a", 4, SHARED, HEAD, loss=0.2, client_id=30)
    message.content.metric_records[METRICS]["accuracy"] = 0.9

    # Execute
    train, evaluate = strip_reply(message, True), strip_reply(message, False)

    # Assert
    assert set(train.content.array_records) == {ARRAYS}
    assert TASK_ARRAYS not in train.content
    assert dict(train.content.metric_records[METRICS]) == {"num-examples": 4, "loss": 0.2}
    assert ClientInfo.from_content(train.content) == ClientInfo(30, "a")
    assert isinstance(train.content.config_records[CLIENT], ConfigRecord)
    np.testing.assert_array_equal(from_record(train.content[ARRAYS])["backbone.n"], 3)
    assert not evaluate.content.array_records
    assert train.metadata.src_node_id == 3
