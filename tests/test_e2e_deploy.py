"""Real deployments on loopback: flower-superlink, flower-supernode, flwr run, TLS, node auth.

Each test starts real processes (a round takes 15-30 s on 2 cores). The
in-process reference (``tests/inprocess_grid.py``) runs the same federation
with the same device files through the same ServerApp and ClientApp code: a
deployment must give exactly its per-client numbers.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from fedmtl.deploy.local import DeployOptions, LocalFederation
from fedmtl.results import METRICS_FILE, read_metrics
from tests.run_reference import in_process_reference

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 600.0


def _per_client(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"round": r["round"], "train": r["train"]["clients"], "evaluate": r["evaluate"]["clients"]}
        for r in records
    ]


def _idle_client(records: list[dict[str, Any]]) -> tuple[int, int]:
    """A round ``r`` and a client that trained by ``r`` but is not sampled in ``r + 1``."""
    trained: set[int] = set()
    for before, after in itertools.pairwise(records[1:]):
        trained |= {c["client-id"] for c in before["train"]["clients"]}
        idle = trained - {c["client-id"] for c in after["train"]["clients"]}
        if idle:
            return before["round"], min(idle)
    raise AssertionError("no client sits out a round after training: change the overrides")


def _wait_for_round(federation: LocalFederation, server_round: int) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        assert federation.processes["run"].poll() is None, federation.log_tail("run", 40)
        for metrics in (federation.workdir / "runs").glob(f"*/{METRICS_FILE}"):
            if any(r["round"] == server_round for r in read_metrics(metrics)):
                return
        time.sleep(0.5)
    raise AssertionError(f"round {server_round} not recorded in {RUN_TIMEOUT_S:.0f} s")


def _assert_all_ended(federation: LocalFederation) -> None:
    for name, process in federation.processes.items():
        assert process.poll() is not None, f"{name} still running"
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)  # no child of it is left either


def test_tls_and_auth_deployment_keeps_a_restarted_devices_head(
    tmp_path: Path, server_identity: None
) -> None:
    # Prepare: TLS and node authentication on, 3 devices holding 3 different
    # tasks in local files, 2 of 3 sampled per round
    options = DeployOptions(
        workdir=tmp_path / "deploy", nodes=3, overrides=("num-rounds=3", "fraction-train=0.7")
    )
    with LocalFederation(options) as federation:
        federation.launch()
        reference = read_metrics(
            in_process_reference(federation, tmp_path / "reference") / METRICS_FILE
        )
        restart_after, client = _idle_client(reference)

        # Execute: the run; a device shuts down and boots again while it is not
        # needed (after round r, it sits out r + 1's training), as a phone would
        run = federation.submit()
        _wait_for_round(federation, restart_after)
        assert federation.stop(f"supernode-{client}") == 0  # SIGTERM: a clean shutdown
        federation.start_supernode(client)
        run_dir = federation.wait_run(run, RUN_TIMEOUT_S)

    # Assert: every process ended; the deployment gave exactly the in-process
    # numbers, so the restarted device went on from the head it had trained
    _assert_all_ended(federation)
    deployed = read_metrics(run_dir / METRICS_FILE)
    assert [r["round"] for r in deployed] == [0, 1, 2, 3]
    assert _per_client(deployed) == _per_client(reference)
    assert not any(r["failures"] or r["rejected"] for r in deployed)
    assert {c["task"] for c in deployed[-1]["evaluate"]["clients"]} == {"digit", "parity", "ge5"}
    assert client in {c["client-id"] for c in deployed[-1]["evaluate"]["clients"]}
    log = (federation.logs / f"supernode-{client}.log").read_text()
    assert log.count("flower-supernode --superlink") == 2  # it really was started twice
    assert "--ssl-certfile" in (federation.logs / "superlink.log").read_text()
    assert "--enable-supernode-auth" in (federation.logs / "superlink.log").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["num-clients"] == 3


def test_a_killed_supernode_costs_its_round_not_the_run(tmp_path: Path) -> None:
    # Prepare: 3 devices, the run may go on with 2
    options = DeployOptions(
        workdir=tmp_path / "deploy",
        nodes=3,
        overrides=("num-rounds=2", "min-available-clients=2"),
    )
    with LocalFederation(options) as federation:
        federation.launch()
        run = federation.submit()
        _wait_for_round(federation, 0)

        # Execute: device 2 dies (SIGKILL, no goodbye) as round 1 starts
        federation.stop("supernode-2", signal.SIGKILL)
        run_dir = federation.wait_run(run, RUN_TIMEOUT_S)

    # Assert: its round-1 reply is a logged failure; the others carry on to the end
    _assert_all_ended(federation)
    records = read_metrics(run_dir / METRICS_FILE)
    assert [r["round"] for r in records] == [0, 1, 2]
    failed = [f["client-id"] for r in records for f in r["failures"]]
    assert failed and set(failed) == {2}
    for record in records[1:]:
        assert [c["client-id"] for c in record["train"]["clients"]] == [0, 1]
    assert [c["client-id"] for c in records[-1]["evaluate"]["clients"]] == [0, 1]
    assert (run_dir / "report.md").exists()


def test_a_supernode_with_an_unregistered_key_is_refused(tmp_path: Path) -> None:
    # Prepare: a SuperLink with node authentication; only node 0's key is registered
    options = DeployOptions(workdir=tmp_path / "deploy", nodes=2)
    with LocalFederation(options) as federation:
        federation.prepare()
        federation.start_superlink()
        federation.register(0)
        federation.start_supernode(0)

        # Execute: node 1 connects with a key the SuperLink never saw
        code = federation.start_supernode(1).wait(timeout=120)

        # Assert: it is turned away and exits; the registered node is connected
        assert code != 0
        assert "Failed to activate SuperNode" in federation.log_tail("supernode-1", 30)
        assert federation.processes["supernode-0"].poll() is None
        status, listing = federation.cli(["supernode", "list", "--format", "json"])
        assert status == 0, listing
        nodes = json.loads(listing)["nodes"]
        assert [n["status"] for n in nodes] == ["online"]  # the intruder never joined
    _assert_all_ended(federation)


def test_devices_holding_two_tasks_each_give_the_in_process_numbers(
    tmp_path: Path, server_identity: None
) -> None:
    # Prepare: 3 devices, each holding two of the three tasks in two local files
    # (node config: task='a,b' with data-path-a and data-path-b), heads task-shared
    options = DeployOptions(
        workdir=tmp_path / "deploy",
        nodes=3,
        overrides=(
            "num-rounds=2",
            "tasks-per-client=2",
            'scope-task=["heads.*"]',
            'scope-local=["*.num_batches_tracked"]',
            'scope-shared=["backbone.*"]',
            'task-weighting="uncertainty"',
        ),
    )
    with LocalFederation(options) as federation:
        federation.launch()
        assert all(len(device.tasks) == 2 for device in federation.devices)
        reference = read_metrics(
            in_process_reference(federation, tmp_path / "reference") / METRICS_FILE
        )

        # Execute
        run_dir = federation.wait_run(federation.submit(), RUN_TIMEOUT_S)

    # Assert: one row per device per task, exactly the in-process numbers
    _assert_all_ended(federation)
    deployed = read_metrics(run_dir / METRICS_FILE)
    assert _per_client(deployed) == _per_client(reference)
    assert not any(r["failures"] or r["rejected"] for r in deployed)
    rows = deployed[-1]["evaluate"]["clients"]
    assert len(rows) == 6
    assert sorted({r["client-id"] for r in rows}) == [0, 1, 2]
    assert {r["task"] for r in rows} == {"digit", "parity", "ge5"}
    assert deployed[-1]["client-task-similarity"]  # the devices' gradient cosines arrived
