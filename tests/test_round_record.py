"""Lines of ``metrics.jsonl`` as typed :class:`RoundRecord`: JSON round trip, old lines, reading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedmtl.metrics import ClientRow, ReplyIssue
from fedmtl.results import PhaseRecord, RoundRecord, RunDirectory, read_rounds

DIGIT = ClientRow(
    client_id=3, task="digit", metrics={"num-examples": 20, "loss": 0.4, "accuracy": 0.9}
)
PARITY = ClientRow(
    client_id=5, task="parity", metrics={"num-examples": 10, "loss": 0.6, "accuracy": 0.7}
)


def _full_record() -> RoundRecord:
    return RoundRecord(
        round=4,
        round_s=1.25,
        elapsed_s=7.5,
        bytes_up=1234,
        bytes_down=5678,
        train=PhaseRecord.of([DIGIT, PARITY]),
        evaluate=PhaseRecord.of([DIGIT]),
        rejected=(ReplyIssue(node_id=11, client_id=1, reason="non-finite values"),),
        failures=(ReplyIssue(node_id=12, client_id=None, reason="no reply"),),
        skipped=True,
        skip_reason="FedAvg returned arrays with non-finite values",
        strategy={"clipped-clients": 2.0},
    )


# A line of metrics.jsonl as fedmtl wrote it before the record was typed.
OLD_LINE: dict[str, Any] = {
    "round": 1,
    "time": {"round-s": 0.5, "elapsed-s": 1.5},
    "comm": {"bytes-up": 10, "bytes-down": 20},
    "evaluate": {"tasks": {"digit": {"accuracy-mean": 0.9, "num-clients": 1}}, "clients": []},
    "train": {
        "tasks": {"digit": {"accuracy-mean": 0.9, "num-clients": 1}},
        "clients": [{"client-id": 3, "task": "digit", "num-examples": 20, "accuracy": 0.9}],
    },
    "rejected": [{"node-id": 11, "client-id": 1, "reason": "keys differ"}],
    "failures": [],
    "skipped": False,
}


def test_a_record_survives_the_json_round_trip() -> None:
    # Prepare
    record = _full_record()
    # Execute
    back = RoundRecord.from_json(json.loads(json.dumps(record.to_json())))
    # Assert
    assert back == record
    assert back.train.tasks["digit"]["accuracy-mean"] == 0.9
    assert back.evaluate.clients == (DIGIT,)


def test_the_json_keys_are_the_file_format() -> None:
    line = _full_record().to_json()
    assert sorted(line) == [
        "comm", "evaluate", "failures", "rejected", "round", "skip-reason", "skipped",
        "strategy", "time", "train",
    ]  # fmt: skip
    assert line["comm"] == {"bytes-up": 1234, "bytes-down": 5678}
    assert line["time"] == {"round-s": 1.25, "elapsed-s": 7.5}
    assert line["train"]["clients"][1] == {
        "client-id": 5, "task": "parity", "num-examples": 10, "loss": 0.6, "accuracy": 0.7,
    }  # fmt: skip
    assert line["failures"] == [{"node-id": 12, "client-id": None, "reason": "no reply"}]
    assert line["strategy"] == {"clipped-clients": 2.0}


def test_an_older_line_reads_and_writes_back_its_keys_unchanged() -> None:
    # Execute
    record = RoundRecord.from_json(OLD_LINE)
    written = record.to_json()
    # Assert: every old key keeps its value; the new keys say "not skipped, no metrics"
    assert {k: written[k] for k in OLD_LINE} == OLD_LINE
    assert set(written) - set(OLD_LINE) == {"skip-reason", "strategy"}
    assert (record.skip_reason, record.strategy) == (None, {})


def test_missing_sections_read_as_gaps_not_zeros() -> None:
    record = RoundRecord.from_json({"round": 2, "evaluate": None})
    assert (record.round_s, record.bytes_up, record.bytes_down) == (None, None, None)
    assert record.evaluate == PhaseRecord() and record.rejected == ()
    assert "time" not in record.to_json() and "comm" not in record.to_json()


@pytest.mark.parametrize(
    "line",
    [{}, {"round": "1"}, {"round": True}, {"round": 1, "train": {"clients": [{"task": "a"}]}}],
)
def test_a_malformed_record_is_refused(line: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"round|client-id"):
        RoundRecord.from_json(line)


def test_a_run_directory_appends_and_reads_back_its_rounds(tmp_path: Path) -> None:
    # Prepare
    run = RunDirectory(tmp_path)
    records = [RoundRecord(round=0, evaluate=PhaseRecord.of([DIGIT])), _full_record()]
    # Execute
    for record in records:
        run.append_metrics(record)
    with run.metrics_file.open("a") as fh:
        fh.write('{"round": 5, "comm": {"bytes-up"')  # a run killed mid-write
    # Assert
    assert run.rounds() == records == read_rounds(run.metrics_file)
    assert len(run.metrics_file.read_text().splitlines()) == 3
