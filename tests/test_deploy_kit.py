"""The pieces of ``fedmtl deploy local`` that need no running process."""

from __future__ import annotations

import ipaddress
import os
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_ssh_private_key
from cryptography.hazmat.primitives.serialization.ssh import load_ssh_public_key

from fedmtl.cli import build_parser, deploy_options, main
from fedmtl.config import (
    ConfigError,
    ExperimentConfig,
    build_config,
    config_from_run_config,
    partition_spec,
)
from fedmtl.data.device import device_data
from fedmtl.data.federation import ClientData, client_data
from fedmtl.deploy.certs import write_node_key, write_tls_files
from fedmtl.deploy.device_files import DeviceFile, write_device_files
from fedmtl.deploy.local import DeployOptions, LocalFederation, node_config_text, stop_recorded

CFG = build_config({"tasks": ["digit", "parity", "ge5"], "num-clients": 6})


def _read_back(device: DeviceFile, cfg: ExperimentConfig, tmp_path: Path) -> ClientData:
    """The device's file, read as a deployed ClientApp reads it."""
    return device_data(
        device.node_config(tmp_path / "state"),
        partition_spec(cfg).dataset_spec(),
        cfg.tasks,
        cfg.seed,
        cfg.test_fraction,
        default_client_id=99,
    )


def test_server_certificate_is_signed_by_the_ca_for_the_loopback_addresses(tmp_path: Path) -> None:
    files = write_tls_files(tmp_path / "tls", ("127.0.0.1", "localhost"))
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)  # raises if the CA did not sign it
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = load_pem_private_key(files.server_key.read_bytes(), password=None)
    assert key.public_key() == server.public_key()
    assert stat.S_IMODE(os.stat(files.server_key).st_mode) == 0o600


def test_node_keys_are_openssh_ecdsa_p384_as_flower_reads_them(tmp_path: Path) -> None:
    key = write_node_key(tmp_path, "node-0")
    private = load_ssh_private_key(key.private.read_bytes(), password=None)
    public = load_ssh_public_key(key.public.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.curve.name == "secp384r1"
    assert private.public_key() == public
    assert key.public.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert stat.S_IMODE(os.stat(key.private).st_mode) == 0o600
    assert write_node_key(tmp_path, "node-1").public.read_text() != key.public.read_text()


def test_device_files_hold_each_clients_partition_and_task(tmp_path: Path) -> None:
    files = write_device_files(CFG, tmp_path, [0, 1, 2])
    assert [f.task for f in files] == ["digit", "parity", "ge5"]
    spec = partition_spec(CFG)
    for device in files:
        partition = client_data(spec, device.client_id)
        read = _read_back(device, CFG, tmp_path)
        assert read.client_id == device.client_id and read.task == device.task
        assert read.num_train + len(read.y_test) == partition.num_train + len(partition.y_test)
        counts = np.bincount(np.concatenate([partition.y_train, partition.y_test]), minlength=10)
        again = np.bincount(np.concatenate([read.y_train, read.y_test]), minlength=10)
        np.testing.assert_array_equal(again, counts)


def test_device_files_refuse_clients_outside_the_experiment(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"clients \[6\].*num-clients 6"):
        write_device_files(CFG, tmp_path, [0, 6])


def test_node_config_text_quotes_paths_with_spaces() -> None:
    text = node_config_text({"data-path": "/data/my files/a.npz", "client-id": 3})
    assert text == 'data-path="/data/my files/a.npz" client-id=3'
    assert shlex.split(text) == ["data-path=/data/my files/a.npz", "client-id=3"]


def test_run_config_carries_the_experiment_and_what_a_deployment_needs(tmp_path: Path) -> None:
    options = DeployOptions(
        workdir=tmp_path,
        nodes=2,
        overrides=(
            "num-rounds=4",
            "strategy=fedmedian",
            "output-dir=/results/my runs",
            'scope-local=["heads.*", "*.num_batches_tracked"]',
        ),
    )
    run_config = LocalFederation(options).run_config()
    cfg = config_from_run_config(run_config)  # what the ServerApp and ClientApps build
    assert (cfg.name, cfg.num_rounds, cfg.strategy) == ("digits", 4, "fedmedian")
    assert cfg.num_clients == 2 and cfg.round_timeout_s == 120.0
    assert cfg.output_dir == "/results/my runs"
    assert cfg.scope_local == ("heads.*", "*.num_batches_tracked")
    assert cfg.tasks == ("digit", "parity")  # the tasks nodes 0 and 1 hold


def test_deploy_local_arguments(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["deploy", "local", "--nodes", "2", "--no-auth", "--set", "num-rounds=1",
         "--workdir", str(tmp_path)]
    )  # fmt: skip
    options = deploy_options(args)
    assert (options.nodes, options.tls, options.auth) == (2, True, False)
    assert options.overrides == ("num-rounds=1",) and options.workdir == tmp_path
    assert (options.app_dir / "pyproject.toml").is_file()


def test_deploy_local_names_a_bad_key_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["deploy", "local", "--set", "strategy=fedavgg", "--workdir", str(tmp_path)])
    assert code == 2
    assert "strategy" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError):
        deploy_options(build_parser().parse_args(["deploy", "local", "--set", "num-rounds=0"]))


def test_an_app_directory_without_pyproject_is_refused(tmp_path: Path) -> None:
    federation = LocalFederation(DeployOptions(workdir=tmp_path / "w", app_dir=tmp_path))
    with pytest.raises(RuntimeError, match="is not a Flower App"):
        federation.prepare()
    assert not (tmp_path / "w").exists()


def test_too_many_nodes_for_the_experiments_data(tmp_path: Path) -> None:
    federation = LocalFederation(DeployOptions(workdir=tmp_path, nodes=13))
    with pytest.raises(RuntimeError, match="--nodes 13: the experiment has only 12 clients"):
        federation.prepare()


def test_stop_recorded_ends_what_a_killed_deployment_left(tmp_path: Path) -> None:
    # A process group standing in for a SuperNode whose `fedmtl deploy` was killed
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    (tmp_path / "pids.json").write_text(f'{{"supernode-0": {orphan.pid}, "superlink": 1999999}}')
    assert stop_recorded(tmp_path) == ["supernode-0"]
    deadline = time.monotonic() + 10
    while orphan.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert orphan.returncode == -15
    assert stop_recorded(tmp_path) == []


def test_text_device_files_are_jsonl_the_device_reads_back(tmp_path: Path) -> None:
    from fedmtl.config import load_experiment

    cfg = load_experiment("text_scratch")
    [device] = write_device_files(cfg, tmp_path, [1])
    assert device.path.name == "data.jsonl" and device.fmt == "jsonl"
    spec = partition_spec(cfg)
    partition = client_data(spec, 1)
    read = _read_back(device, cfg, tmp_path)
    assert read.task == partition.task == "verb-supersense"
    texts = sorted(map(str, np.concatenate([partition.x_train, partition.x_test])))
    assert sorted(map(str, np.concatenate([read.x_train, read.x_test]))) == texts
    labels = np.concatenate([partition.y_train, partition.y_test])
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([read.y_train, read.y_test])), np.bincount(labels)
    )


def test_deploy_local_needs_at_least_one_node(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["deploy", "local", "--nodes", "0"])
    assert "--nodes: must be >= 1, got 0" in capsys.readouterr().err
