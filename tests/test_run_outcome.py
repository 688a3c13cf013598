"""A run that trains nothing fails loudly: ``summary.json`` says so and ``fedmtl simulate`` exits 1.

The judged records are synthetic in the unit tests; the whole runs go through
the real ServerApp and ClientApp code in this process (``tests/inprocess_grid.py``),
and once through Ray (slow).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import fedmtl.simulation
from fedmtl.cli import main
from fedmtl.config import ExperimentConfig
from fedmtl.metrics import ClientRow
from fedmtl.results import PhaseRecord, RoundRecord, RunDirectory, RunOutcome, judge_run
from fedmtl.results.rebuild import rebuild_report, write_run_outputs
from fedmtl.server_app import run_server
from tests.e2e_helpers import saboteur, small
from tests.failing_strategies import BOOM
from tests.inprocess_grid import InProcessGrid, device_context

RAISING = "tests.failing_strategies:RaisingFedAvg"
NAN = "tests.failing_strategies:NanFedAvg"


def _trained(server_round: int, skip_reason: str | None = None) -> RoundRecord:
    row = ClientRow(client_id=0, task="digit", metrics={"num-examples": 8, "accuracy": 0.5})
    return RoundRecord(
        round=server_round,
        train=PhaseRecord.of([row]),
        evaluate=PhaseRecord.of([row]),
        skipped=skip_reason is not None,
        skip_reason=skip_reason,
    )


def _initial() -> RoundRecord:
    row = ClientRow(client_id=0, task="digit", metrics={"num-examples": 8, "accuracy": 0.1})
    return RoundRecord(round=0, evaluate=PhaseRecord.of([row]))


# --------------------------------------------------------------------------- #
# Judging records
# --------------------------------------------------------------------------- #


def test_a_run_with_some_skipped_rounds_succeeds_and_counts_them() -> None:
    # Prepare
    records = [_initial(), _trained(1, "FedAvg returned no arrays"), _trained(2), _trained(3)]
    # Execute
    outcome = judge_run(records)
    # Assert
    assert not outcome.failed and outcome.status == "ok"
    assert outcome.to_json() == {
        "status": "ok",
        "failure": None,
        "skipped-rounds": 1,
        "skip-reasons": [{"round": 1, "reason": "FedAvg returned no arrays"}],
    }


def test_a_run_whose_every_round_was_skipped_fails_naming_the_reasons() -> None:
    no_reason = dataclasses.replace(_trained(2), skipped=True)
    records = [_initial(), _trained(1, "boom"), no_reason]
    outcome = judge_run(records)
    assert outcome.failed
    assert outcome.failure == (
        "every round was skipped (round 1: boom; round 2: no reason recorded)"
    )
    assert len(outcome.skipped) == 2


def test_a_long_run_lists_its_first_skipped_rounds_only() -> None:
    records = [_initial(), *(_trained(r, f"reason {r}") for r in range(1, 6))]
    failure = judge_run(records).failure
    assert failure is not None
    assert "round 3: reason 3; ..." in failure and "reason 4" not in failure


def test_a_run_in_which_no_client_ever_replied_fails() -> None:
    issue = {"node-id": 7, "client-id": 0, "reason": "no reply"}
    silent = [
        RoundRecord.from_json({"round": r, "failures": [issue], "skipped": True}) for r in (1, 2)
    ]
    outcome = judge_run([_initial(), *silent])
    assert outcome.failure == (
        "no client sent a valid training reply in any of the 2 round(s) (0 rejected, 2 failed)"
    )


def test_a_run_stopped_early_fails_for_that_reason() -> None:
    outcome = judge_run([_initial()], stopped="only 1 of 3 nodes connected")
    assert outcome.failure == "only 1 of 3 nodes connected"
    assert judge_run([_initial()]).failure is None  # nothing trained yet, nothing failed


def test_the_outcome_reads_back_from_a_summary() -> None:
    outcome = judge_run([_initial(), _trained(1, "boom")])
    assert RunOutcome.from_summary(outcome.to_json()) == outcome
    assert RunOutcome.from_summary({"rounds": 3}) == RunOutcome()  # an older run: a success


# --------------------------------------------------------------------------- #
# The run directory keeps the outcome
# --------------------------------------------------------------------------- #


def test_summary_and_report_record_the_failure(tmp_path: Path) -> None:
    # Prepare
    run = RunDirectory(tmp_path)
    for record in (_initial(), _trained(1, "boom"), _trained(2, "boom")):
        run.append_metrics(record)
    # Execute
    summary = write_run_outputs(run, {"config": {"num-rounds": 2}})
    # Assert
    saved = json.loads(run.summary_file.read_text())
    assert saved == summary
    assert saved["status"] == "failed" and saved["skipped-rounds"] == 2
    assert saved["config"] == {"num-rounds": 2}
    assert "every round was skipped" in run.report_file.read_text()
    assert run.outcome().failure == saved["failure"]
    # `fedmtl report` rebuilds the same outcome
    run.summary_file.write_text(json.dumps({"config": {"num-rounds": 2}}))
    rebuild_report(tmp_path)
    assert run.summary()["status"] == "failed" and run.summary()["config"] == {"num-rounds": 2}


def test_a_failure_only_the_summary_knows_survives_a_rebuild(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    run.append_metrics(_initial())
    run.write_summary({"status": "failed", "failure": "only 1 of 3 nodes connected"})
    rebuild_report(tmp_path)
    assert run.outcome().failure == "only 1 of 3 nodes connected"


def test_a_run_without_summary_failed(tmp_path: Path) -> None:
    outcome = RunDirectory(tmp_path).outcome()
    assert outcome.failed and "summary.json" in str(outcome.failure)


# --------------------------------------------------------------------------- #
# Whole runs, in process
# --------------------------------------------------------------------------- #


def _run_in_process(cfg: ExperimentConfig, **grid_options: object) -> RunDirectory:
    torch.set_num_threads(1)
    contexts = {
        100 + c: device_context(100 + c, {"partition-id": c}) for c in range(cfg.num_clients)
    }
    run = RunDirectory.create(cfg)
    run_server(InProcessGrid(contexts, cfg, **grid_options), cfg, run)  # type: ignore[arg-type]
    return run


def test_a_strategy_raising_in_every_round_fails_the_run(
    tmp_path: Path, server_identity: None
) -> None:
    # Prepare
    cfg = small(tmp_path, strategy=RAISING)
    # Execute
    run = _run_in_process(cfg)
    # Assert: every round skipped with the strategy's error, the run failed
    summary = run.summary()
    assert summary["status"] == "failed"
    assert summary["skipped-rounds"] == cfg.num_rounds == 2
    assert summary["failure"].startswith("every round was skipped (round 1: ")
    assert [s["round"] for s in summary["skip-reasons"]] == [1, 2]
    assert all(BOOM in s["reason"] for s in summary["skip-reasons"])
    records = run.rounds()
    assert [(r.round, r.skipped) for r in records] == [(0, False), (1, True), (2, True)]
    assert all(BOOM in str(r.skip_reason) for r in records[1:])
    assert "The run failed" in run.report_file.read_text()  # what ran so far is reported


def test_a_strategy_returning_nan_gets_every_round_skipped(
    tmp_path: Path, server_identity: None
) -> None:
    cfg = small(tmp_path, strategy=NAN)
    run = _run_in_process(cfg)
    summary = run.summary()
    assert summary["status"] == "failed"
    assert summary["skipped-rounds"] == 2
    assert all("non-finite" in s["reason"] for s in summary["skip-reasons"]), summary
    with_nan = [json.loads(line) for line in run.metrics_file.read_text().splitlines()]
    assert all(r["skipped"] and r["skip-reason"] for r in with_nan[1:])


def test_a_run_in_which_no_client_replies_validly_fails(
    tmp_path: Path, server_identity: None
) -> None:
    cfg = small(tmp_path, **{"num-clients": 4})  # the saboteur spoils clients 0-3
    run = _run_in_process(cfg, mods=[saboteur])
    summary = run.summary()
    assert summary["status"] == "failed"
    assert summary["failure"] == (
        "no client sent a valid training reply in any of the 2 round(s) (6 rejected, 2 failed)"
    )
    assert summary["rejected-replies"] == 6 and summary["failed-replies"] == 2


def test_a_healthy_run_succeeds_with_nothing_skipped(tmp_path: Path, server_identity: None) -> None:
    run = _run_in_process(small(tmp_path))
    summary = run.summary()
    assert (summary["status"], summary["failure"], summary["skipped-rounds"]) == ("ok", None, 0)
    assert summary["skip-reasons"] == []


# --------------------------------------------------------------------------- #
# The exit status of `fedmtl simulate`
# --------------------------------------------------------------------------- #


def test_simulate_exits_1_when_every_round_was_skipped(
    tmp_path: Path,
    server_identity: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Prepare: `simulate` runs the federation in process instead of on Ray
    def simulate_in_process(cfg: ExperimentConfig, **_: object) -> Path:
        return _run_in_process(cfg).path

    monkeypatch.setattr(fedmtl.simulation, "simulate", simulate_in_process)
    args = ["simulate", "digits", "--set", f"strategy={RAISING}"]
    args += ["--set", "num-clients=3", "--set", "num-rounds=2", "--set", "partitioner=iid"]
    args += ["--set", f"output-dir={tmp_path / 'runs'}"]
    # Execute
    code = main(args)
    # Assert
    out, err = capsys.readouterr()
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert code == 1
    assert "fedmtl: run failed: every round was skipped (round 1: " in err
    assert f"results so far are in {run_dir}" in err
    assert "skipped rounds: 2 of 2" in out
    assert (run_dir / "summary.json").exists() and (run_dir / "report.md").exists()


@pytest.mark.slow
def test_simulate_on_ray_exits_1_when_every_round_was_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "simulate", "digits", "--set", f"strategy={RAISING}", "--set", "num-clients=3",
            "--set", "num-rounds=2", "--set", "partitioner=iid",
            "--set", f"output-dir={tmp_path}",
        ]
    )  # fmt: skip
    assert code == 1
    assert "fedmtl: run failed: every round was skipped" in capsys.readouterr().err
