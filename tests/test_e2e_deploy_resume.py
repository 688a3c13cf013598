"""A deployed run survives its ServerApp: killed after round 2 of 4, resumed, same numbers.

Real ``flower-superlink`` / ``flower-supernode`` processes on loopback (TLS and
node authentication on). The ServerApp process (``flwr-serverapp``, started by
the SuperLink's SuperExec) is killed once round 2 is recorded and checkpointed;
``fedmtl deploy local --resume`` then starts the deployment again (a new
SuperLink, the SuperNodes with their state directories) and the run goes on
from the checkpoint. The uninterrupted reference is the same federation run in
this process through the same ServerApp and ClientApp code with the same device
files (``tests/inprocess_grid.py``): ``tests/test_e2e_deploy.py`` shows a
deployment gives exactly its numbers.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedmtl.checkpoint import load_checkpoint
from fedmtl.cli import main
from fedmtl.deploy.local import DeployOptions, LocalFederation
from fedmtl.results import METRICS_FILE, read_metrics
from tests.run_reference import final_arrays, in_process_reference

pytestmark = pytest.mark.slow

ROUNDS, KILL_AFTER = 4, 2
TIMEOUT_S = 400.0


def _serverapp_pid(federation: LocalFederation) -> int | None:
    """The ``flwr-serverapp`` process serving this deployment's SuperLink, if running."""
    address = f"--runtime-api-address\0{federation.address}\0"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "flwr-serverapp" in cmdline and address in cmdline:
            return int(entry.name)
    return None


def _checkpointed(run_dir: Path) -> int:
    try:
        return load_checkpoint(run_dir).server_round
    except (FileNotFoundError, ValueError, EOFError):
        return 0


def _kill_serverapp_after(federation: LocalFederation, server_round: int) -> None:
    """SIGKILL the ServerApp once ``server_round`` is recorded and checkpointed."""
    run_dir = federation.run_dir()
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        assert federation.processes["run"].poll() is None, federation.log_tail("run", 40)
        metrics = run_dir / METRICS_FILE
        recorded = metrics.exists() and any(
            r["round"] == server_round for r in read_metrics(metrics)
        )
        pid = _serverapp_pid(federation)
        if recorded and _checkpointed(run_dir) >= server_round and pid is not None:
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.2)
    raise AssertionError(f"round {server_round} not checkpointed in {TIMEOUT_S:.0f} s")


def _per_client(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"round": r["round"], "train": r["train"]["clients"], "evaluate": r["evaluate"]["clients"]}
        for r in records
    ]


def test_a_deployment_killed_after_round_2_resumes_to_the_uninterrupted_numbers(
    tmp_path: Path, server_identity: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: 2 devices (TLS, node authentication), 1 of 2 sampled per round,
    # a checkpoint every round; the uninterrupted reference
    options = DeployOptions(
        workdir=tmp_path / "deploy",
        nodes=2,
        overrides=(
            f"num-rounds={ROUNDS}",
            "checkpoint-every=1",
            "fraction-train=0.5",
            "evaluate-every=2",  # fewer messages: rounds 2 and 4 (and 0) evaluate
        ),
    )
    with LocalFederation(options) as federation:
        federation.launch()
        reference = read_metrics(
            in_process_reference(federation, tmp_path / "reference") / METRICS_FILE
        )
        expected_arrays = final_arrays(next((tmp_path / "reference").glob("digits-*")))

        # Execute: the ServerApp process dies during round 3 (after round 2's checkpoint)
        federation.submit()
        _kill_serverapp_after(federation, KILL_AFTER)
        run_dir = federation.run_dir()
    killed = read_metrics(run_dir / METRICS_FILE)
    assert not (run_dir / "summary.json").exists()  # it really did not finish
    assert [r["round"] for r in killed][: KILL_AFTER + 1] == list(range(KILL_AFTER + 1))

    # ... and the deployment is started again, resuming the run
    code = main(["deploy", "local", "--resume", str(run_dir), "--timeout", str(TIMEOUT_S)])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]

    # Assert: rounds 0-4 once each, rounds 3-4 exactly the uninterrupted numbers,
    # the same final arrays; the devices went on from their round-2 state
    resumed = read_metrics(run_dir / METRICS_FILE)
    assert [r["round"] for r in resumed] == list(range(ROUNDS + 1))
    assert _per_client(resumed) == _per_client(reference)
    assert not any(r["failures"] or r["rejected"] for r in resumed)
    got = final_arrays(run_dir)
    assert sorted(got) == sorted(expected_arrays) and got
    for key, value in expected_arrays.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert f"resuming {run_dir}" in out
    assert f"rounds {KILL_AFTER + 1}-{ROUNDS}" in (federation.logs / "run.log").read_text()
