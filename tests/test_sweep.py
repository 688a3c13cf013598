"""Sweeps without Ray: grid parsing, validation before any run, skipping finished runs, table."""

from __future__ import annotations

import csv
import io
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedmtl.cli import main
from fedmtl.config import ConfigError, ExperimentConfig
from fedmtl.metrics import ClientRow
from fedmtl.results import PhaseRecord, RoundRecord, RunDirectory
from fedmtl.results.rebuild import write_summary
from fedmtl.results.sweep import (
    FAILED,
    FINISHED,
    PARTIAL,
    SweepManifest,
    format_sweep_csv,
    format_sweep_markdown,
    sweep_rows,
)
from fedmtl.sweeps import parse_grid, plan_sweep, run_sweep

TINY = {"num-clients": 2, "num-rounds": 1, "tasks": ["digit"]}


def accuracies(cfg: ExperimentConfig) -> list[float]:
    """Two clients' final accuracies, a known function of the swept keys and the seed."""
    base = 0.5 + 0.1 * (cfg.dirichlet_alpha >= 1.0) + 0.2 * (cfg.strategy == "fedper")
    return [base + 0.02 * cfg.seed, base - 0.1 + 0.02 * cfg.seed]


def write_fake_run(cfg: ExperimentConfig, finals: list[float], status_ok: bool = True) -> Path:
    """A real run directory (config, metrics, summary) under the config's output-dir."""
    run = RunDirectory.create(cfg)
    for server_round, values in enumerate([[0.1, 0.1], finals]):
        rows = [
            ClientRow.from_json(
                {"client-id": i, "task": "digit", "num-examples": 10, "accuracy": a, "loss": 1 - a}
            )
            for i, a in enumerate(values)
        ]
        run.append_metrics(
            RoundRecord(
                round=server_round,
                elapsed_s=float(server_round),
                train=PhaseRecord.of(rows) if server_round else PhaseRecord(),
                evaluate=PhaseRecord.of(rows),
            )
        )
    write_summary(run, stopped=None if status_ok else "the fake run failed")
    return run.path


class FakeSimulate:
    """Records each call; writes a run whose accuracies are :func:`accuracies`."""

    def __init__(self) -> None:
        self.calls: list[tuple[ExperimentConfig, Path | None, bool]] = []

    def __call__(
        self, cfg: ExperimentConfig, *, run_dir: Path | None = None, resume: bool = False
    ) -> Path:
        self.calls.append((cfg, run_dir, resume))
        if resume and run_dir is not None:
            write_summary(RunDirectory(run_dir))
            return run_dir
        return write_fake_run(cfg, accuracies(cfg))


GRID: list[tuple[str, list[Any]]] = [
    ("dirichlet-alpha", [0.1, 1.0]),
    ("strategy", ["fedavg", "fedper"]),
]


@pytest.mark.parametrize(
    ("text", "key", "values"),
    [
        ("dirichlet-alpha=[0.1,1.0]", "dirichlet-alpha", (0.1, 1.0)),
        ("num-clients=[4, 8]", "num-clients", (4, 8)),
        ("strategy=[fedavg,fedper]", "strategy", ("fedavg", "fedper")),
        ("strategy=[fedavg, 'a,b']", "strategy", ("fedavg", "a,b")),
        ("eval-unseen=[true,false]", "eval-unseen", (True, False)),
        ('tasks=[["digit"],["digit","parity"]]', "tasks", (["digit"], ["digit", "parity"])),
        ("tasks=[[digit],[digit,parity]]", "tasks", ("[digit]", "[digit,parity]")),
        ("learning-rate=0.05", "learning-rate", (0.05,)),
        ("finetune=last-block", "finetune", ("last-block",)),
    ],
)
def test_grid_values_are_read_like_set_values(text: str, key: str, values: tuple[Any, ...]) -> None:
    assert parse_grid(text) == (key, values)


def test_a_grid_without_equals_sign_names_grid() -> None:
    with pytest.raises(ConfigError, match="'grid'"):
        parse_grid("dirichlet-alpha")


@pytest.mark.parametrize(
    ("grid", "key"),
    [
        ([("dirichlet-alpa", [0.1])], "dirichlet-alpa"),  # unknown key
        ([("dirichlet-alpha", [0.1, -1.0])], "dirichlet-alpha"),  # the second point is bad
        ([("dirichlet-alpha", [0.1, float("nan")])], "dirichlet-alpha"),
        ([("strategy", ["fedavg", "fedavgg"])], "strategy"),
        ([("seed", [0, 1])], "seed"),  # seeds come from --seeds
        ([("feature-cache-dir", ["a", "b"])], "feature-cache-dir"),  # the runs share one
        ([("strategy", ["fedavg"]), ("strategy", ["fedper"])], "strategy"),  # twice
        ([], "grid"),
    ],
)
def test_every_point_is_validated_before_any_run(
    tmp_path: Path, grid: list[tuple[str, list[Any]]], key: str
) -> None:
    simulate = FakeSimulate()
    with pytest.raises(ConfigError, match=f"'{key}'"):
        run_sweep("digits", grid, [0, 1], TINY, tmp_path, simulate=simulate)
    assert simulate.calls == []
    assert list(tmp_path.iterdir()) == []  # nothing written either


def test_cli_wrong_key_exits_2_naming_it_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["sweep", "digits", "--grid", "dirichlet-alpa=[0.1,1.0]", "--seeds", "0",
         "--output-dir", str(tmp_path), "--set", "num-rounds=1"]
    )  # fmt: skip
    assert code == 2
    assert "dirichlet-alpa" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_sweep_runs_every_point_and_seed_then_skips_finished_runs(tmp_path: Path) -> None:
    # Prepare / Execute: a 2 x 2 grid over 2 seeds
    simulate = FakeSimulate()
    folder = run_sweep("digits", GRID, [0, 1], TINY, tmp_path, simulate=simulate)
    # Assert: 8 runs, each in its own slot, sharing one feature cache
    assert len(simulate.calls) == 8
    assert folder.name.startswith("sweep-digits-")
    manifest = SweepManifest.read(folder)
    assert len({r.slot for r in manifest.runs}) == 8
    assert all(r.state == FINISHED for r in manifest.runs)
    assert len({cfg.feature_cache_dir for cfg, _, _ in simulate.calls}) == 1
    assert {(c.dirichlet_alpha, c.strategy, c.seed) for c, _, _ in simulate.calls} == {
        (a, s, seed) for a in (0.1, 1.0) for s in ("fedavg", "fedper") for seed in (0, 1)
    }
    # Execute again: the same command finds the same folder and runs nothing
    lines: list[str] = []
    again = FakeSimulate()
    assert run_sweep("digits", GRID, [0, 1], TINY, tmp_path, simulate=again, log=lines.append)
    assert again.calls == []
    assert sum("skipped (finished)" in line for line in lines) == 8
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


def test_failed_and_partial_runs_are_rerun_or_resumed(tmp_path: Path) -> None:
    # Prepare: a finished sweep, then one run failed, one killed, one killed with a checkpoint
    run_sweep("digits", GRID, [0], TINY, tmp_path, simulate=FakeSimulate())
    (folder,) = tmp_path.iterdir()
    runs = SweepManifest.read(folder).runs
    failed, killed, checkpointed = (r.run_dir for r in runs[:3])
    assert failed is not None and killed is not None and checkpointed is not None
    write_summary(RunDirectory(failed), stopped="boom")
    (killed / "summary.json").unlink()
    (checkpointed / "summary.json").unlink()
    (checkpointed / "checkpoint.pkl").write_bytes(b"x")
    assert [r.state for r in runs] == [FAILED, PARTIAL, PARTIAL, FINISHED]
    # Execute
    simulate = FakeSimulate()
    run_sweep("digits", GRID, [0], TINY, tmp_path, simulate=simulate)
    # Assert: two fresh runs, one resumed from its own directory, the finished one skipped
    fresh = [cfg.strategy for cfg, run_dir, resume in simulate.calls if not resume]
    resumed = [run_dir for _, run_dir, resume in simulate.calls if resume]
    assert (len(fresh), resumed) == (2, [checkpointed])
    assert all(r.state == FINISHED for r in SweepManifest.read(folder).runs)


def test_table_is_mean_sd_and_worst_over_seeds_by_hand(tmp_path: Path) -> None:
    # Prepare / Execute
    folder = run_sweep("digits", GRID, [0, 1], TINY, tmp_path, simulate=FakeSimulate())
    # Assert: fedper at alpha 1.0: base 0.8; clients (0.8, 0.7) at seed 0, (0.82, 0.72) at seed 1
    rows = list(csv.DictReader((folder / "sweep.csv").open()))
    assert list(rows[0]) == ["dirichlet-alpha", "strategy", "task", "metric", "mean", "sd",
                             "worst", "seeds"]  # fmt: skip
    assert len(rows) == 4
    row = next(r for r in rows if r["dirichlet-alpha"] == "1.0" and r["strategy"] == "fedper")
    seed_means = [0.75, 0.77]
    assert float(row["mean"]) == pytest.approx(statistics.mean(seed_means))
    assert float(row["sd"]) == pytest.approx(statistics.stdev(seed_means))
    assert float(row["worst"]) == pytest.approx((0.7 + 0.72) / 2)
    assert (row["task"], row["metric"], row["seeds"]) == ("digit", "accuracy", "2")
    assert (
        "| 1.0 | fedper | digit | accuracy | 0.760 ± 0.014 | 0.710 | 2 |"
        in (folder / "sweep.md").read_text()
    )
    assert (folder / "plots" / "accuracy-vs-dirichlet-alpha.png").stat().st_size > 0
    # `fedmtl report` rebuilds the table from the runs
    (folder / "sweep.md").unlink()
    assert main(["report", str(folder)]) == 0
    assert "0.760 ± 0.014" in (folder / "sweep.md").read_text()


def test_rows_with_one_seed_have_zero_sd_and_a_missing_metric_has_none() -> None:
    finals = [{"a": {"accuracy-mean": 0.6, "accuracy-worst": 0.4}}]
    points = [({"strategy": "fedavg"}, finals), ({"strategy": "none"}, [])]
    rows = sweep_rows(points)
    assert rows == [
        {"strategy": "fedavg", "task": "a", "metric": "accuracy", "mean": 0.6, "sd": 0.0,
         "worst": 0.4, "seeds": 1}
    ]  # fmt: skip
    (missing,) = sweep_rows(points, metric="mae")
    assert (missing["mean"], missing["sd"], missing["worst"], missing["seeds"]) == (
        None, None, None, 0)  # fmt: skip
    text = format_sweep_csv(rows, ["strategy"])
    assert next(csv.DictReader(io.StringIO(text)))["mean"] == "0.6"
    assert "| fedavg | a | accuracy | 0.600 ± 0.000 | 0.400 | 1 |" in format_sweep_markdown(
        rows, ["strategy"], 1
    )


def test_plot_key_must_be_swept(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'plot-key'"):
        plan_sweep("digits", GRID, [0], TINY, tmp_path, plot_key="learning-rate")


def test_a_different_grid_or_setting_is_a_different_folder(tmp_path: Path) -> None:
    one = plan_sweep("digits", GRID, [0], TINY, tmp_path).folder
    two = plan_sweep("digits", GRID[:1], [0], TINY, tmp_path).folder
    three = plan_sweep("digits", GRID, [0], {**TINY, "batch-size": 64}, tmp_path).folder
    assert len({one, two, three}) == 3
    assert plan_sweep("digits", GRID, [0], dict(TINY), tmp_path).folder == one


def test_an_edited_experiment_file_is_a_new_sweep_not_finished_runs(tmp_path: Path) -> None:
    # Prepare: a finished sweep of an experiment file
    experiment = tmp_path / "exp.toml"
    experiment.write_text('name = "exp"\nbatch-size = 16\n')
    grid = [("strategy", ["fedavg"])]
    run_sweep(str(experiment), grid, [0], TINY, tmp_path / "out", simulate=FakeSimulate())
    # Execute: the file changes, the command is the same
    experiment.write_text('name = "exp"\nbatch-size = 64\n')
    simulate = FakeSimulate()
    run_sweep(str(experiment), grid, [0], TINY, tmp_path / "out", simulate=simulate)
    # Assert: it ran again, with the new setting, in a new folder
    assert [cfg.batch_size for cfg, _, _ in simulate.calls] == [64]
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_adding_a_seed_reuses_the_finished_runs(tmp_path: Path) -> None:
    run_sweep("digits", GRID, [0], TINY, tmp_path, simulate=FakeSimulate())
    simulate = FakeSimulate()
    folder = run_sweep("digits", GRID, [0, 1], TINY, tmp_path, simulate=simulate)
    assert sorted({cfg.seed for cfg, _, _ in simulate.calls}) == [1]
    assert len(simulate.calls) == 4
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    rows = list(csv.DictReader((folder / "sweep.csv").open()))
    assert {r["seeds"] for r in rows} == {"2"}


def test_a_seed_given_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'seeds'.*given more than once"):
        plan_sweep("digits", GRID, [0, 0], TINY, tmp_path)


def test_a_point_whose_data_cannot_be_split_stops_the_sweep_before_any_run(
    tmp_path: Path,
) -> None:
    simulate = FakeSimulate()
    grid = [("num-clients", [2, 5000])]
    with pytest.raises(ConfigError, match=r"num-clients=5000, seed 0"):
        run_sweep("digits", grid, [0], {**TINY, "num-clients": 2}, tmp_path, simulate=simulate)
    assert simulate.calls == []


def test_a_non_finite_seed_mean_shows_as_nan_and_the_table_is_written() -> None:
    finals = [
        {"a": {"accuracy-mean": 0.6, "accuracy-worst": 0.4}},
        {"a": {"accuracy-mean": float("nan"), "accuracy-worst": float("nan")}},
    ]
    (row,) = sweep_rows([({"strategy": "fedavg"}, finals)])
    assert row["seeds"] == 2
    assert row["sd"] != row["sd"] and row["mean"] != row["mean"]  # NaN, not an exception
    assert "| fedavg | a | accuracy |" in format_sweep_markdown([row], ["strategy"], 2)


def test_importing_fedmtl_loads_no_torch_ray_or_flower() -> None:
    code = (
        "import sys, fedmtl; fedmtl.__version__; "
        "print(sorted(m for m in ('torch', 'ray', 'flwr', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.replace("'", '"')) == []


def test_compare_is_a_sweep_over_strategy_and_a_repeat_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a fake centralized reference that counts its calls
    import fedmtl.centralized
    from fedmtl.compare import run_comparison

    central: list[int] = []

    def fake_centralized(cfg: ExperimentConfig) -> dict[str, Any]:
        central.append(cfg.seed)
        stats = {"accuracy-mean": 0.9, "accuracy-std": 0.0, "accuracy-worst": 0.9,
                 "accuracy-p10": 0.9}  # fmt: skip
        return {"tasks": {"digit": stats}, "learning-rate": 0.05, "epochs": 1}

    monkeypatch.setattr(fedmtl.centralized, "train_centralized", fake_centralized)
    simulate = FakeSimulate()
    # Execute: twice, the same command
    folder = run_comparison("digits", ["fedper"], [0, 1], TINY, tmp_path, True, simulate)
    again = FakeSimulate()
    assert run_comparison("digits", ["fedper"], [0, 1], TINY, tmp_path, True, again) == folder
    # Assert: (fedper, local-only) x 2 seeds, once; the same table the second time
    assert sorted((c.strategy, c.seed) for c, _, _ in simulate.calls) == [
        ("fedper", 0), ("fedper", 1), ("local-only", 0), ("local-only", 1)]  # fmt: skip
    assert (again.calls, central) == ([], [0, 1])
    assert folder.name.startswith("compare-digits-")
    results = json.loads((folder / "results.json").read_text())
    assert results["strategies"] == ["fedper", "local-only", "centralized"]
    fedper = results["runs"]["fedper"]["0"]["final"]["digit"]["accuracy-mean"]
    assert fedper == pytest.approx(statistics.mean(accuracies(simulate.calls[0][0])))
    assert "| fedper |" in (folder / "compare.md").read_text()


def test_cli_exits_1_naming_a_failed_run_and_keeps_the_others_in_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fedmtl.sweeps

    def simulate(cfg: ExperimentConfig, **_: Any) -> Path:
        return write_fake_run(cfg, accuracies(cfg), status_ok=cfg.strategy != "fedper")

    monkeypatch.setattr(fedmtl.sweeps, "default_simulate", lambda: simulate)
    code = main(
        ["sweep", "digits", "--grid", "strategy=[fedavg,fedper]", "--output-dir", str(tmp_path),
         "--set", "num-clients=2", "--set", "num-rounds=1", "--set", 'tasks=["digit"]']
    )  # fmt: skip
    assert code == 1
    assert "sweep run failed: strategy=fedper, seed 0" in capsys.readouterr().err
    (folder,) = tmp_path.iterdir()
    rows = list(csv.DictReader((folder / "sweep.csv").open()))
    assert [(r["strategy"], r["seeds"]) for r in rows] == [("fedavg", "1")]


def test_a_compare_entry_takes_the_runs_own_outcome(tmp_path: Path) -> None:
    from fedmtl.assembly import load_run
    from fedmtl.results.compare import run_entry

    cfg = load_run("digits", {**TINY, "output-dir": str(tmp_path)})
    failed = run_entry(write_fake_run(cfg, [0.5, 0.5], status_ok=False))
    assert (failed["status"], failed["failure"]) == ("failed", "the fake run failed")
    killed = write_fake_run(cfg, [0.5, 0.5])
    (killed / "summary.json").unlink()
    assert run_entry(killed)["status"] == "failed"
    assert run_entry(write_fake_run(cfg, [0.5, 0.5]))["status"] == "ok"
