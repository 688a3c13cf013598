"""Ray backend settings: a local Ray, an existing cluster, the CPU/GPU checks (no Ray runs)."""

from __future__ import annotations

import dataclasses
import logging
import socket
from pathlib import Path

import pytest

from fedmtl import simulation
from fedmtl.config import ConfigError, ExperimentConfig
from fedmtl.simulation import NodeResources, backend_config, ray_address
from tests.machine import fake_machine

pytestmark = pytest.mark.usefixtures("no_ray_address")


# --- local Ray ------------------------------------------------------------------------------


def test_local_ray_gets_this_machines_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_machine(monkeypatch, cpus=8, gpus=2)

    backend = backend_config(ExperimentConfig(client_num_cpus=2.0, client_num_gpus=0.5))

    assert backend == {
        "client_resources": {"num_cpus": 2.0, "num_gpus": 0.5},
        "init_args": {"num_cpus": 8, "num_gpus": 2, "include_dashboard": False},
    }


def test_local_keyword_ignores_ray_address(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_machine(monkeypatch, cpus=2, gpus=0)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")

    backend = backend_config(ExperimentConfig(ray_address="local"))

    assert backend["init_args"] == {
        "num_cpus": 2,
        "num_gpus": 0,
        "include_dashboard": False,
        "address": "local",
    }


@pytest.mark.parametrize(
    ("cfg", "key", "words"),
    [
        (ExperimentConfig(client_num_cpus=3.0), "client-num-cpus", "this machine has 2"),
        (ExperimentConfig(client_num_gpus=0.5), "client-num-gpus", "no CUDA GPU is visible"),
    ],
)
def test_local_ray_refuses_what_the_machine_lacks(
    monkeypatch: pytest.MonkeyPatch, cfg: ExperimentConfig, key: str, words: str
) -> None:
    fake_machine(monkeypatch, cpus=2, gpus=0)

    with pytest.raises(ConfigError, match=words) as info:
        backend_config(cfg)

    assert info.value.key == key


def test_local_ray_refuses_more_gpus_than_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_machine(monkeypatch, cpus=2, gpus=1)

    with pytest.raises(ConfigError, match="only 1 GPUs exist") as info:
        backend_config(ExperimentConfig(client_num_gpus=2.0))

    assert info.value.key == "client-num-gpus"


# --- where Ray runs -------------------------------------------------------------------------


def test_key_wins_over_environment_and_environment_over_local(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ray_address(ExperimentConfig()) == ""
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert ray_address(ExperimentConfig()) == "10.0.0.1:6379"
    assert ray_address(ExperimentConfig(ray_address="10.0.0.2:6379")) == "10.0.0.2:6379"
    assert ray_address(ExperimentConfig(ray_address="local")) == "local"


# --- existing cluster -----------------------------------------------------------------------

TWO_CPU_NODES = [NodeResources(cpus=1, gpus=0, host="a"), NodeResources(cpus=4, gpus=0, host="b")]
GPU_NODES = [
    NodeResources(cpus=8.0, gpus=0.0, host="a"),
    NodeResources(cpus=8.0, gpus=1.0, host="b"),
]


def test_cluster_gets_the_address_and_no_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_machine(monkeypatch, cpus=1, gpus=0)  # the driver's machine does not matter

    backend = backend_config(
        ExperimentConfig(ray_address="10.0.0.1:6379", client_num_cpus=4.0), TWO_CPU_NODES
    )

    assert backend == {
        "client_resources": {"num_cpus": 4.0, "num_gpus": 0.0},
        "init_args": {"address": "10.0.0.1:6379", "include_dashboard": False},
    }


def test_cluster_from_the_environment_probes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    probed: list[str] = []

    def probe(address: str) -> list[NodeResources]:
        probed.append(address)
        return GPU_NODES

    monkeypatch.setattr(simulation, "probe_cluster", probe)

    backend = backend_config(ExperimentConfig(client_num_gpus=0.25))

    assert probed == ["auto"]
    assert backend["init_args"] == {"address": "auto", "include_dashboard": False}
    assert backend["client_resources"] == {"num_cpus": 1.0, "num_gpus": 0.25}


def test_fractional_gpus_fit_the_gpu_node() -> None:
    cfg = ExperimentConfig(ray_address="auto", client_num_cpus=2.0, client_num_gpus=0.5)

    assert backend_config(cfg, GPU_NODES)["client_resources"]["num_gpus"] == 0.5


@pytest.mark.parametrize(
    ("cfg", "nodes", "key", "words"),
    [
        (ExperimentConfig(client_num_cpus=5.0), TWO_CPU_NODES, "client-num-cpus", "no node"),
        (ExperimentConfig(client_num_gpus=0.5), TWO_CPU_NODES, "client-num-gpus", "has a GPU"),
        (ExperimentConfig(client_num_gpus=2.0), GPU_NODES, "client-num-gpus", r"\[0.0, 1.0\]"),
        # the GPU node has too few CPUs: a client must fit on one node
        (
            ExperimentConfig(client_num_cpus=4.0, client_num_gpus=1.0),
            [NodeResources(cpus=8, gpus=0), NodeResources(cpus=2, gpus=1)],
            "client-num-gpus",
            "has a GPU",
        ),
        (ExperimentConfig(), [], "client-num-cpus", r"CPUs per node: \[\]"),
    ],
)
def test_cluster_refuses_what_no_node_offers(
    cfg: ExperimentConfig, nodes: list[NodeResources], key: str, words: str
) -> None:
    cfg = dataclasses.replace(cfg, ray_address="10.0.0.1:6379")

    with pytest.raises(ConfigError, match=words) as info:
        backend_config(cfg, nodes)

    assert info.value.key == key
    assert "10.0.0.1:6379" in str(info.value)


def test_unreachable_address_names_the_key() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(ConfigError, match="cannot reach a Ray cluster") as info:
        simulation.probe_cluster(f"127.0.0.1:{port}")

    assert info.value.key == "ray-address"


# --- paths every node must see --------------------------------------------------------------


def test_multi_host_cluster_names_the_paths_to_share(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = ExperimentConfig(
        client_state="disk", feature_cache="disk", feature_cache_dir=str(tmp_path / "fc")
    )

    with caplog.at_level(logging.WARNING, logger="fedmtl.simulation"):
        simulation.warn_unshared(cfg, tmp_path / "run", "auto", TWO_CPU_NODES)

    [record] = caplog.records
    assert f"client-state-dir = {tmp_path / 'run' / 'client-state'}" in record.message
    assert f"feature-cache-dir = {tmp_path / 'fc'}" in record.message
    assert "2 hosts" in record.message


def test_one_host_or_nothing_on_disk_warns_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    one_host = [NodeResources(cpus=1, gpus=0, host="a"), NodeResources(cpus=1, gpus=0, host="a")]

    with caplog.at_level(logging.WARNING, logger="fedmtl.simulation"):
        simulation.warn_unshared(ExperimentConfig(client_state="disk"), tmp_path, "x", one_host)
        simulation.warn_unshared(
            ExperimentConfig(client_state="memory"), tmp_path, "x", TWO_CPU_NODES
        )

    assert caplog.records == []
