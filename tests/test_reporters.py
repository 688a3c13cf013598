"""Trackers: the ``trackers`` key, the reporters' fan-out, TensorBoard and MLflow read back."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedmtl.config import ConfigError, ExperimentConfig, build_config
from fedmtl.metrics import ClientRow
from fedmtl.results import PhaseRecord, RoundRecord, RunDirectory
from fedmtl.results.reporters import Reporters, round_scalars
from fedmtl.trackers import TRACKERS

needs_tracking = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("tensorboard", "mlflow")),
    reason="needs the 'tracking' extra: pip install -e '.[tracking]'",
)
TASKS = ("digit", "parity")


def _record(number: int, seed: int = 0) -> RoundRecord:
    """A synthetic round: per-client accuracies drawn from ``(number, seed)``."""
    rng = np.random.default_rng([number, seed])
    rows = [
        ClientRow(
            client_id=c,
            task=TASKS[c % 2],
            metrics={
                "num-examples": 10 + c,
                "loss": float(rng.random()),
                "accuracy": float(rng.random()),
            },
        )
        for c in range(4)
    ]
    return RoundRecord(
        round=number,
        round_s=0.5 + number,
        elapsed_s=2.0 * number,
        bytes_up=1000 * number,
        bytes_down=2000 * number,
        train=PhaseRecord.of(rows if number else ()),
        evaluate=PhaseRecord.of(rows),
        strategy={"eta": 0.1 * number, "broken": float("nan")},
    )


def _cfg(tmp_path: Path, **values: Any) -> ExperimentConfig:
    return build_config({"output-dir": str(tmp_path), "num-clients": 4, **values})


# --- the key -------------------------------------------------------------------------------
def test_trackers_key_names_the_allowed_values_and_refuses_repeats_and_non_strings() -> None:
    with pytest.raises(ConfigError) as unknown:
        build_config({"trackers": ["tensorbord"]})
    assert unknown.value.key == "trackers"
    assert "did you mean 'tensorboard'" in str(unknown.value)
    assert str(TRACKERS.names()) in str(unknown.value)
    for bad in ([float("nan")], [float("inf")], 3):
        with pytest.raises(ConfigError, match="trackers") as wrong:
            build_config({"trackers": bad})
        assert wrong.value.key == "trackers"
    if importlib.util.find_spec("tensorboard") is not None:
        with pytest.raises(ConfigError, match="twice"):
            build_config({"trackers": ["tensorboard", "tensorboard"]})
    assert build_config({}).trackers == ()
    assert TRACKERS.names() == ["mlflow", "tensorboard"]


def test_a_missing_package_is_an_error_naming_the_extra_at_config_and_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: tensorboard "not installed"
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real(name, *a),
    )
    # Execute / Assert: validation, then the run's start (a config built without validation)
    with pytest.raises(ConfigError, match=r"fedmtl\[tracking\]") as at_config:
        build_config({"trackers": ["tensorboard"]})
    assert at_config.value.key == "trackers"
    cfg = ExperimentConfig(output_dir=str(tmp_path), trackers=("tensorboard",))
    run = RunDirectory.create(cfg)
    with pytest.raises(ConfigError, match="'tracking' extra"):
        Reporters.open(cfg, run)
    assert not (run.path / "tensorboard").exists()


def test_no_tracker_is_imported_unless_asked() -> None:
    code = (
        "import sys; from fedmtl.config import build_config; import fedmtl.server_app; "
        "build_config({'trackers': []}); "
        "bad = [m for m in sys.modules if m.startswith(('mlflow', 'tensorboard', "
        "'torch.utils.tensorboard', 'fedmtl.results.reporters.'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- what is mirrored ----------------------------------------------------------------------
def test_round_scalars_are_the_records_numbers_without_client_rows() -> None:
    record = _record(2)
    scalars = round_scalars(record)
    for phase in ("train", "evaluate"):
        for task, stats in record.phase(phase).tasks.items():  # type: ignore[arg-type]
            for stat, value in stats.items():
                assert scalars[f"{phase}/{task}/{stat}"] == value
    assert scalars["time/round-s"] == 2.5
    assert scalars["comm/bytes-up"] == 2000.0
    assert scalars["strategy/eta"] == pytest.approx(0.2)
    assert "strategy/broken" not in scalars  # non-finite: left out
    assert scalars["replies/rejected"] == 0.0
    assert not any("clients" in key.split("/") for key in scalars)  # no client rows
    assert "replies/failed" not in round_scalars(_record(0))  # round 0 trains nothing


def test_a_numeric_section_a_record_gains_is_mirrored_too() -> None:
    @dataclass(frozen=True)
    class WithPrivacy(RoundRecord):
        def to_json(self) -> dict[str, Any]:
            return {**super().to_json(), "privacy": {"epsilon": 1.5, "delta": 1e-5}}

    scalars = round_scalars(WithPrivacy(round=1))
    assert scalars["privacy/epsilon"] == 1.5
    assert scalars["privacy/delta"] == 1e-5


@dataclass
class _Recording:
    calls: list[str]
    fail_in_round: int | None = None

    def start(self, cfg: ExperimentConfig, run: RunDirectory, first_round: int) -> None:
        self.calls.append(f"start {first_round}")

    def round(self, record: RoundRecord) -> None:
        if record.round == self.fail_in_round:
            raise OSError("disk full")
        self.calls.append(f"round {record.round}")

    def close(self, summary: Mapping[str, Any] | None) -> None:
        self.calls.append(f"close {summary}")


def test_a_failing_reporter_is_logged_and_switched_off_the_others_go_on() -> None:
    good, bad = _Recording([]), _Recording([], fail_in_round=1)
    err = io.StringIO()
    reporters = Reporters({"good": good, "bad": bad}, err=err)
    for number in range(3):
        reporters.round(_record(number))
    reporters.close({"status": "ok"})
    assert good.calls == ["round 0", "round 1", "round 2", "close {'status': 'ok'}"]
    assert bad.calls == ["round 0"]
    assert "tracker 'bad' failed (round 1): OSError: disk full" in err.getvalue()
    assert not reporters


# --- TensorBoard ---------------------------------------------------------------------------
def _events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


@needs_tracking
def test_tensorboard_scalars_read_back_equal_the_records_and_resume_keeps_one_per_round(
    tmp_path: Path,
) -> None:
    # Prepare
    cfg = _cfg(tmp_path, trackers=["tensorboard"])
    run = RunDirectory.create(cfg)
    # Execute: rounds 0-4, then a "resumed" run redoes 3-5 (other values: seed 1)
    first = Reporters.open(cfg, run)
    for number in range(5):
        first.round(_record(number))
    first.close(None)
    resumed = Reporters.open(cfg, run, first_round=3)
    for number in range(3, 6):
        resumed.round(_record(number, seed=1))
    resumed.close({"status": "ok"})
    # Assert: every scalar once per round, TensorBoard's float32 of the record's value
    events = _events(run.path / "tensorboard")
    expected = [_record(n) for n in range(3)] + [_record(n, seed=1) for n in range(3, 6)]
    checked = 0
    for record in expected:
        for tag, value in round_scalars(record).items():
            steps = [step for step, _ in events[tag]]
            assert steps.count(record.round) == 1, (tag, steps)
            got = dict(events[tag])[record.round]
            assert got == np.float32(value), (tag, record.round)
            checked += 1
    assert checked > 6 * 10


# --- MLflow --------------------------------------------------------------------------------
@needs_tracking
def test_mlflow_metrics_read_back_exactly_and_resume_does_not_repeat_rounds(
    tmp_path: Path,
) -> None:
    from mlflow.tracking import MlflowClient

    from fedmtl.results.reporters.mlflow import tracking_uri

    # Prepare
    cfg = _cfg(tmp_path, trackers=["mlflow"], name="tiny")
    run = RunDirectory.create(cfg)
    # Execute: rounds 0-3 logged, the run "killed"; resumed from round 2, it redoes 2-4
    first = Reporters.open(cfg, run)
    for number in range(4):
        first.round(_record(number))
    resumed = Reporters.open(cfg, run, first_round=2)
    for number in range(2, 5):
        resumed.round(_record(number))
    resumed.close({"status": "ok"})
    # Assert
    client = MlflowClient(tracking_uri=tracking_uri(run))
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED"
    assert found.data.params["num-clients"] == "4"
    expected: dict[str, list[tuple[int, float]]] = {}
    for number in range(5):
        for key, value in round_scalars(_record(number)).items():
            expected.setdefault(key, []).append((number, value))
    assert len(expected) > 10
    for key, points in expected.items():
        history = client.get_metric_history(found.info.run_id, key)
        assert sorted((m.step, m.value) for m in history) == points, key  # exact, once each
