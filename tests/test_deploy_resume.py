"""Resuming a deployed run: run-config keys, checks and ``fedmtl deploy local --resume``.

No process is started here; ``tests/test_e2e_deploy_resume.py`` runs a real one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from fedmtl.assembly import experiment_from_run_config
from fedmtl.checkpoint import CHECKPOINT_FILE, Checkpoint, resume_point, save_checkpoint
from fedmtl.cli import main
from fedmtl.client_app import state_store
from fedmtl.config import ConfigError, config_from_run_config, deployment_run_dir
from fedmtl.deploy.local import DEPLOYMENT_FILE, DeployOptions, LocalFederation, resume_options
from fedmtl.results import METRICS_FILE
from fedmtl.server_app import DEPLOYED_RUN_FILE, deployment_run

OVERRIDES = ("num-rounds=4", "checkpoint-every=1")


def _deployed_run(tmp_path: Path, checkpoint_round: int | None = 2) -> tuple[DeployOptions, Path]:
    """A deployment's options and its run directory, checkpointed after ``checkpoint_round``."""
    options = DeployOptions(workdir=tmp_path / "deploy", nodes=2, overrides=OVERRIDES)
    federation = LocalFederation(options)
    run_config = federation.run_config()
    run, _ = deployment_run(experiment_from_run_config(run_config), run_config)  # as flwr run
    run_dir = run.path
    (run_dir / DEPLOYMENT_FILE).write_text(json.dumps(options.to_json()))
    if checkpoint_round is not None:
        save_checkpoint(run_dir, Checkpoint.capture(checkpoint_round, {}, {}, 3, 1.0))
    return options, run_dir


def test_the_run_config_names_the_run_directory_and_a_resume_continues_it(
    tmp_path: Path,
) -> None:
    options = DeployOptions(workdir=tmp_path, nodes=2, overrides=OVERRIDES)
    fresh = LocalFederation(options).run_config()
    run_dir = Path(fresh["run-dir"])
    assert run_dir.parent == (tmp_path / "runs").resolve() and run_dir.name.startswith("digits-")
    assert "resume" not in fresh
    resumed = LocalFederation(DeployOptions(**{**vars(options), "resume": run_dir})).run_config()
    assert resumed["resume"] == str(run_dir) and "run-dir" not in resumed
    # Not experiment keys: the apps' config is the same either way
    assert config_from_run_config(fresh) == config_from_run_config(resumed)
    assert deployment_run_dir(fresh) == (str(run_dir), False)
    assert deployment_run_dir(resumed) == (str(run_dir), True)
    assert deployment_run_dir({"run-dir": "", "resume": ""}) == (None, False)


def test_conflicting_or_mistyped_run_directory_keys_are_named() -> None:
    with pytest.raises(ConfigError, match=r"run-dir"):
        deployment_run_dir({"run-dir": "/a", "resume": "/b"})
    with pytest.raises(ConfigError, match=r"resume"):
        deployment_run_dir({"resume": 3})
    assert deployment_run_dir({"run-dir": "/a", "resume": "/a"}) == ("/a", True)


def test_resume_point_needs_a_readable_checkpoint_of_the_same_config(tmp_path: Path) -> None:
    options, run_dir = _deployed_run(tmp_path)
    cfg = experiment_from_run_config(LocalFederation(options).run_config())
    assert resume_point(run_dir, cfg).server_round == 2
    more = dataclasses.replace(cfg, num_rounds=6)
    assert resume_point(run_dir, more).server_round == 2  # more rounds: allowed
    other = dataclasses.replace(cfg, seed=7)
    with pytest.raises(ConfigError, match=r"'seed'.*differs from 0 in the checkpointed run"):
        resume_point(run_dir, other)
    fewer = dataclasses.replace(cfg, num_rounds=1)
    with pytest.raises(ConfigError, match=r"'num-rounds'.*below the checkpoint's round 2"):
        resume_point(run_dir, fewer)
    (run_dir / CHECKPOINT_FILE).write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match=r"'resume'.*cannot be read"):
        resume_point(run_dir, cfg)
    (run_dir / CHECKPOINT_FILE).unlink()
    with pytest.raises(ConfigError, match=r"'resume'.*checkpoint-every"):
        resume_point(run_dir, cfg)
    with pytest.raises(ConfigError, match=r"'resume'.*not a fedmtl run"):
        resume_point(tmp_path / "nowhere", cfg)


def test_the_server_app_starts_a_named_run_directory_once(tmp_path: Path) -> None:
    options = DeployOptions(workdir=tmp_path, nodes=2, overrides=OVERRIDES)
    run_config = LocalFederation(options).run_config()
    cfg = experiment_from_run_config(run_config)
    run, checkpoint = deployment_run(cfg, run_config)
    assert checkpoint is None and str(run.path) == run_config["run-dir"]
    assert run.config_file.exists()
    (run.path / METRICS_FILE).write_text("{}\n")
    with pytest.raises(ConfigError, match=r"'run-dir'.*already holds a run.*resume"):
        deployment_run(cfg, run_config)
    save_checkpoint(run.path, Checkpoint.capture(1, {}, {}, 1, 0.5))
    again, checkpoint = deployment_run(cfg, {**run_config, "resume": run_config["run-dir"]})
    assert again.path == run.path and checkpoint is not None and checkpoint.server_round == 1


def test_a_run_started_without_run_dir_cannot_resume_its_devices(tmp_path: Path) -> None:
    # Its devices keep their state under the first run's id, out of a new run's reach
    cfg = experiment_from_run_config({"experiment": "digits", "output-dir": str(tmp_path)})
    run, _ = deployment_run(cfg, {"experiment": "digits", "output-dir": str(tmp_path)})
    assert not (run.path / DEPLOYED_RUN_FILE).exists()
    save_checkpoint(run.path, Checkpoint.capture(1, {}, {}, 1, 0.5))
    with pytest.raises(ConfigError, match=r"'resume'.*not started by `flwr run` with run-dir"):
        deployment_run(cfg, {"resume": str(run.path)})


def test_resume_options_are_the_deployments_own(tmp_path: Path) -> None:
    options, run_dir = _deployed_run(tmp_path)
    resumed = resume_options(run_dir, ("num-rounds=6",))
    assert resumed.resume == run_dir.resolve()
    assert (resumed.nodes, resumed.workdir) == (2, options.workdir.resolve())
    assert resumed.overrides == (*OVERRIDES, "num-rounds=6")
    with pytest.raises(ConfigError, match=r"'strategy'.*only num-rounds"):
        resume_options(run_dir, ("strategy=fedprox",))


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ([], "checkpoint-every"),  # no checkpoint
        (["--set", "seed=3"], "seed"),
        (["--nodes", "3"], "--nodes"),
        (["mnist-like"], "experiment"),
        (["--no-tls"], "--tls"),
    ],
)
def test_deploy_local_resume_refuses_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], named: str
) -> None:
    _, run_dir = _deployed_run(tmp_path, checkpoint_round=None if not arguments else 2)
    code = main(["deploy", "local", "--resume", str(run_dir), *arguments])
    assert code == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "deploy" / "logs").exists()  # no process was started


def test_deploy_local_resume_of_a_directory_it_did_not_deploy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deploy", "local", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'resume'" in err and "not a run started by `fedmtl deploy local`" in err


def test_device_state_follows_the_run_directory_across_run_ids(tmp_path: Path) -> None:
    cfg = experiment_from_run_config({"experiment": "digits"})

    def store_dir(run_id: int, run_config: dict[str, str]) -> Path | None:
        context = Context(
            run_id=run_id,
            node_id=1,
            node_config={"state-dir": str(tmp_path)},
            state=RecordDict(),
            run_config=run_config,  # type: ignore[arg-type]
        )
        return state_store(cfg, context).directory

    assert store_dir(7, {}) == tmp_path / "run-7"
    first = store_dir(7, {"run-dir": "/srv/runs/digits-1"})
    assert first == store_dir(8, {"resume": "/srv/runs/digits-1"}) == tmp_path / "run-digits-1"
