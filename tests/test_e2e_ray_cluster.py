"""``fedmtl simulate`` attached to a two-node Ray cluster started on this machine.

Two ``ray start`` nodes (one CPU each, their own temporary directories and
ports) form the cluster; with ``client-num-cpus = 1`` Flower's actor pool holds
one ClientAppActor per node, and Ray's actor table says which node ran each.
Every Ray process of the cluster is stopped by PID (found in /proc) at the
end, never by a machine-wide ``ray stop``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds Ray's processes in /proc"),
]

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "0"
    return env


def _processes() -> dict[int, tuple[int, bytes]]:
    """Every process of this machine: pid -> (parent pid, command line), read from /proc."""
    table: dict[int, tuple[int, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        table[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)
    return table


def _cluster_pids(temp_root: str) -> set[int]:
    """Processes whose command line names this cluster's temporary directory, and their
    descendants (Ray's workers rename themselves ``ray::IDLE``)."""
    table = _processes()
    pids = {pid for pid, (_, cmd) in table.items() if temp_root.encode() in cmd}
    pids.discard(os.getpid())
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in pids} - pids
        pids |= children
        grew = bool(children)
    return pids


def _signal(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _stop(temp_root: str) -> None:
    """SIGTERM every process of the cluster, then SIGKILL what is left after 10 s."""
    pids = _cluster_pids(temp_root)
    _signal(pids, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and pids & set(_processes()):
        time.sleep(0.2)
    _signal((pids & set(_processes())) | _cluster_pids(temp_root), signal.SIGKILL)


@dataclass(frozen=True)
class Cluster:
    address: str
    temp_root: str


@pytest.fixture
def two_node_cluster() -> Iterator[Cluster]:
    # Short: Ray's unix socket paths live under the temp dir (107-byte limit).
    temp_root = tempfile.mkdtemp(prefix="fedray", dir="/tmp")
    address = f"127.0.0.1:{_free_port()}"
    common = ["--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1"]
    common += ["--disable-usage-stats"]
    head = [RAY, "start", "--head", f"--port={address.rsplit(':', 1)[1]}"]
    head += [f"--temp-dir={temp_root}/head", "--include-dashboard=false", *common]
    worker = [RAY, "start", f"--address={address}", f"--temp-dir={temp_root}/worker", *common]
    worker += [f"--node-manager-port={_free_port()}", f"--object-manager-port={_free_port()}"]
    try:
        for cmd in (head, worker):
            subprocess.run(cmd, check=True, env=_env(), capture_output=True, timeout=60)
        yield Cluster(address, temp_root)
    finally:
        _stop(temp_root)
        shutil.rmtree(temp_root, ignore_errors=True)


def _simulate(tmp_path: Path, address: str) -> subprocess.CompletedProcess[str]:
    overrides = {
        "num-clients": "2",
        "tasks": '["digit", "parity"]',
        "num-rounds": "1",
        "partitioner": "iid",
        "client-num-cpus": "1",
        "round-timeout-s": "120",
        "ray-address": address,
        "output-dir": str(tmp_path / "runs"),
    }
    sets = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
    return subprocess.run(
        [sys.executable, "-m", "fedmtl.cli", "simulate", "simulations/digits.toml", *sets],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=150,
    )


def _client_actor_nodes(address: str) -> tuple[list[str], set[str]]:
    """Node of each ClientAppActor the cluster ran, and the cluster's live nodes."""
    import ray
    from ray._private import state

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    try:
        actors = state.actors()  # type: ignore[no-untyped-call]
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}  # type: ignore[no-untyped-call]
    finally:
        ray.shutdown()
    on = [
        a["Address"]["NodeID"] for a in actors.values() if "ClientAppActor" in a["ActorClassName"]
    ]
    return on, nodes


def test_simulate_runs_clients_on_both_nodes(two_node_cluster: Cluster, tmp_path: Path) -> None:
    started = time.monotonic()

    done = _simulate(tmp_path, two_node_cluster.address)

    assert done.returncode == 0, done.stderr[-3000:]
    [run_dir] = (tmp_path / "runs").iterdir()
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    trained = {c["client-id"] for r in rounds for c in r["train"]["clients"]}
    assert trained == {0, 1}
    actor_nodes, live_nodes = _client_actor_nodes(two_node_cluster.address)
    assert len(live_nodes) == 2
    assert set(actor_nodes) == live_nodes  # one ClientAppActor per one-CPU node
    assert time.monotonic() - started < 120


def test_unreachable_address_exits_2(tmp_path: Path) -> None:
    address = f"127.0.0.1:{_free_port()}"  # nobody listens there

    done = _simulate(tmp_path, address)

    assert done.returncode == 2
    assert "config key 'ray-address'" in done.stderr
    assert f"cannot reach a Ray cluster at '{address}'" in done.stderr
