"""GPU settings without a GPU: Ray backend GPU cases, Flower's placement, the `device` choice.

No Ray runs: the machine, the cluster's nodes and CUDA's availability are mocked.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import ray
import torch
from flwr.simulation.ray_transport.ray_actor import pool_size_from_resources

from fedmtl import centralized, simulation
from fedmtl.config import ConfigError, ExperimentConfig
from fedmtl.run_model import run_device
from fedmtl.simulation import NodeResources, backend_config
from tests.machine import fake_machine

pytestmark = pytest.mark.usefixtures("no_ray_address")


def _cuda(monkeypatch: pytest.MonkeyPatch, available: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)


def _ray_nodes(monkeypatch: pytest.MonkeyPatch, nodes: list[dict[str, Any]]) -> None:
    monkeypatch.setattr(ray, "nodes", lambda: nodes)


# --- fractional GPUs reach Ray, and Ray places floor(1 / num-gpus) clients per GPU ---------


@pytest.mark.parametrize("num_gpus", [1.0, 0.5, 0.25, 0.125, 0.3])
def test_fractional_gpus_reach_client_resources(
    monkeypatch: pytest.MonkeyPatch, num_gpus: float
) -> None:
    fake_machine(monkeypatch, cpus=16, gpus=1)

    backend = backend_config(ExperimentConfig(client_num_gpus=num_gpus))

    assert backend["client_resources"] == {"num_cpus": 1.0, "num_gpus": num_gpus}
    assert backend["init_args"]["num_gpus"] == 1


@pytest.mark.parametrize(
    ("num_gpus", "gpus", "cpus", "actors"),
    [
        (1.0, 1, 16, 1),
        (0.5, 1, 16, 2),
        (0.25, 1, 16, 4),
        (0.125, 1, 16, 8),
        (0.3, 1, 16, 3),  # floor(1 / 0.3)
        (0.25, 2, 16, 8),  # per GPU, over the node's GPUs
        (0.125, 1, 4, 4),  # CPUs bound it before GPUs do
    ],
)
def test_flower_places_floor_one_over_num_gpus_clients_per_gpu(
    monkeypatch: pytest.MonkeyPatch, num_gpus: float, gpus: int, cpus: int, actors: int
) -> None:
    """What our backend settings give Flower's actor pool on one GPU node (its own sizing)."""
    fake_machine(monkeypatch, cpus=cpus, gpus=gpus)
    _ray_nodes(monkeypatch, [{"Resources": {"CPU": float(cpus), "GPU": float(gpus)}}])
    resources = backend_config(ExperimentConfig(client_num_gpus=num_gpus))["client_resources"]

    assert pool_size_from_resources(resources) == actors
    assert actors == min(cpus, gpus * math.floor(1 / num_gpus))


def test_flower_places_gpu_clients_only_on_gpu_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    _ray_nodes(
        monkeypatch,
        [
            {"Resources": {"CPU": 8.0}},  # a CPU-only worker node
            {"Resources": {"CPU": 8.0, "GPU": 1.0}},
            {"Resources": {}},  # a node that left the cluster
        ],
    )
    cfg = ExperimentConfig(ray_address="10.0.0.1:6379", client_num_gpus=0.25)
    nodes = [NodeResources(cpus=8, gpus=0, host="a"), NodeResources(cpus=8, gpus=1, host="b")]

    resources = backend_config(cfg, nodes)["client_resources"]

    assert pool_size_from_resources(resources) == 4


# --- a cluster's GPUs are counted node by node, from Ray ------------------------------------


def test_probe_cluster_counts_gpus_of_live_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(simulation, "_check_reachable", lambda address: None)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(f"init {kwargs['address']}"))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    _ray_nodes(
        monkeypatch,
        [
            {"Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 16.0}},
            {
                "Alive": True,
                "NodeManagerAddress": "10.0.0.2",
                "Resources": {"CPU": 16.0, "GPU": 2.0},
            },
            {"Alive": False, "NodeManagerAddress": "10.0.0.3", "Resources": {"GPU": 8.0}},
        ],
    )

    nodes = simulation.probe_cluster("10.0.0.1:6379")

    assert nodes == [
        NodeResources(cpus=16.0, gpus=0.0, host="10.0.0.1"),
        NodeResources(cpus=16.0, gpus=2.0, host="10.0.0.2"),
    ]
    assert calls == ["init 10.0.0.1:6379", "shutdown"]
    cfg = ExperimentConfig(ray_address="10.0.0.1:6379", client_num_gpus=0.5, device="cuda")
    assert backend_config(cfg, nodes)["client_resources"]["num_gpus"] == 0.5


# --- device = "cuda" is checked before Ray starts -------------------------------------------


def test_local_cuda_without_a_gpu_names_device(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_machine(monkeypatch, cpus=4, gpus=0)

    with pytest.raises(ConfigError, match="no CUDA GPU is visible") as info:
        backend_config(ExperimentConfig(device="cuda"))

    assert info.value.key == "device"


def test_local_cuda_with_a_gpu_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_machine(monkeypatch, cpus=4, gpus=1)

    assert backend_config(ExperimentConfig(device="cuda"))["init_args"]["num_gpus"] == 1
    assert backend_config(ExperimentConfig(device="cuda", client_num_gpus=0.25))


def test_cluster_cuda_needs_gpus_per_client() -> None:
    nodes = [NodeResources(cpus=8, gpus=1, host="a")]
    cfg = ExperimentConfig(ray_address="10.0.0.1:6379", device="cuda")

    with pytest.raises(ConfigError, match="client-num-gpus > 0") as info:
        backend_config(cfg, nodes)

    assert info.value.key == "device"
    assert "10.0.0.1:6379" in str(info.value)


# --- the run's device: clients and the centralized reference --------------------------------


@pytest.mark.parametrize(
    ("preference", "available", "expected"),
    [
        ("cpu", True, "cpu"),
        ("cpu", False, "cpu"),
        ("auto", True, "cuda"),
        ("auto", False, "cpu"),
        ("cuda", True, "cuda"),
    ],
)
def test_run_device_follows_the_device_key(
    monkeypatch: pytest.MonkeyPatch, preference: str, available: bool, expected: str
) -> None:
    _cuda(monkeypatch, available)

    assert run_device(ExperimentConfig(device=preference)).type == expected


def test_run_device_cuda_without_cuda_names_device(monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda(monkeypatch, False)

    with pytest.raises(ConfigError, match="sees no CUDA device") as info:
        run_device(ExperimentConfig(device="cuda"))

    assert info.value.key == "device"
    assert '"auto"' in str(info.value) and '"cpu"' in str(info.value)


TINY = ExperimentConfig(num_clients=3, num_rounds=1, max_examples_per_task=90, tasks=("digit",))


def test_centralized_reference_trains_where_device_says(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def device(cfg: ExperimentConfig) -> torch.device:
        asked.append(cfg.device)
        return torch.device("cpu")

    monkeypatch.setattr(centralized, "run_device", device)

    result = centralized.train_centralized(dataclasses.replace(TINY, device="cuda"))

    assert asked == ["cuda"]
    assert {row["task"] for row in result["clients"]} == {"digit"}


def test_centralized_reference_cuda_without_cuda_names_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _cuda(monkeypatch, False)

    with pytest.raises(ConfigError) as info:
        centralized.train_centralized(dataclasses.replace(TINY, device="cuda"))

    assert info.value.key == "device"


def test_centralized_reference_on_cpu_is_unchanged_by_the_device_key() -> None:
    cpu = centralized.train_centralized(dataclasses.replace(TINY, device="cpu"))
    auto = centralized.train_centralized(TINY) if not torch.cuda.is_available() else cpu

    assert cpu["clients"] == auto["clients"]
    assert cpu["train-loss"] == auto["train-loss"]
