"""Run an experiment on Flower's Simulation Runtime (Ray backend)."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.clientapp.typing import Mod

from fedmtl.assembly import resolve_run
from fedmtl.attacks import attack_mod
from fedmtl.checkpoint import load_checkpoint
from fedmtl.client_app import feature_cache_dir, make_client_app
from fedmtl.config import ConfigError, ExperimentConfig
from fedmtl.features import run_feature_store
from fedmtl.results import RunDirectory
from fedmtl.run_model import check_run_inputs
from fedmtl.server_app import make_server_app

logger = logging.getLogger(__name__)

LOCAL_RAY = "local"


@dataclass(frozen=True)
class NodeResources:
    """CPUs and GPUs one Ray node offers, and the host it runs on."""

    cpus: float
    gpus: float
    host: str = ""


def visible_gpus() -> int:
    """Number of CUDA devices this process can see (0 without torch CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def ray_address(cfg: ExperimentConfig) -> str:
    """The Ray cluster to attach to; ``""`` or ``"local"`` start a Ray of our own.

    Precedence: the ``ray-address`` key, then the ``RAY_ADDRESS`` environment
    variable (what ``ray job submit`` sets), then ``""``. ``ray-address =
    "local"`` starts a local Ray even when ``RAY_ADDRESS`` is set.
    """
    return cfg.ray_address or os.environ.get("RAY_ADDRESS", "")


def _check_local(cfg: ExperimentConfig, cpus: int, gpus: int) -> None:
    if cfg.client_num_cpus > cpus:
        raise ConfigError(
            "client-num-cpus", f"{cfg.client_num_cpus} per client but this machine has {cpus}"
        )
    if cfg.client_num_gpus > 0 and gpus == 0:
        raise ConfigError(
            "client-num-gpus",
            f"{cfg.client_num_gpus} GPUs per client requested but no CUDA GPU is visible; "
            "set client-num-gpus = 0 to run on CPU",
        )
    if cfg.client_num_gpus > gpus:
        raise ConfigError(
            "client-num-gpus", f"{cfg.client_num_gpus} per client but only {gpus} GPUs exist"
        )
    if cfg.device == "cuda" and gpus == 0:
        raise ConfigError(
            "device",
            "'cuda' but no CUDA GPU is visible on this machine; "
            'use device = "auto" (CUDA when visible) or "cpu"',
        )


def check_cluster(cfg: ExperimentConfig, address: str, nodes: Sequence[NodeResources]) -> None:
    """Raise :class:`ConfigError` unless one node of the cluster holds a whole client.

    Flower sizes its actor pool node by node, so a client's CPUs and GPUs must
    fit on a single node, not just in the cluster's total.
    """
    where = f"the Ray cluster at '{address}'"
    cpus = [n.cpus for n in nodes]
    if not any(c >= cfg.client_num_cpus for c in cpus):
        raise ConfigError(
            "client-num-cpus",
            f"{cfg.client_num_cpus} per client but no node of {where} has that many "
            f"(CPUs per node: {cpus})",
        )
    if cfg.client_num_gpus == 0:
        if cfg.device == "cuda":
            # By default Ray hides a node's GPUs from workers that asked for none.
            raise ConfigError(
                "device",
                f"'cuda' on {where} needs client-num-gpus > 0, so that Ray gives each client "
                "a GPU (e.g. 0.25: four clients per GPU)",
            )
        return
    gpus = [n.gpus for n in nodes if n.cpus >= cfg.client_num_cpus]
    if not any(g > 0 for g in gpus):
        raise ConfigError(
            "client-num-gpus",
            f"{cfg.client_num_gpus} GPUs per client requested but no node of {where} with "
            f"{cfg.client_num_cpus} CPUs has a GPU; set client-num-gpus = 0 to run on CPU",
        )
    if not any(g >= cfg.client_num_gpus for g in gpus):
        raise ConfigError(
            "client-num-gpus",
            f"{cfg.client_num_gpus} per client but no node of {where} has that many "
            f"(GPUs per node with {cfg.client_num_cpus} CPUs: {gpus})",
        )


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on ``host:port`` nobody listens on (Ray itself retries for a minute)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto" and ray:// addresses: Ray resolves them
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(
            "ray-address",
            f"cannot reach a Ray cluster at '{address}' ({exc}); start one with "
            "`ray start --head --port=PORT` or fix the address",
        ) from None


def probe_cluster(address: str) -> list[NodeResources]:
    """Connect to the Ray cluster at ``address`` briefly and list its live nodes' resources."""
    import ray

    _check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except Exception as exc:  # Ray raises ConnectionError, ValueError, RuntimeError, ...
        raise ConfigError(
            "ray-address", f"cannot attach to a Ray cluster at '{address}': {exc}"
        ) from None
    try:
        return [
            NodeResources(
                cpus=float(node["Resources"].get("CPU", 0)),
                gpus=float(node["Resources"].get("GPU", 0)),
                host=str(node.get("NodeManagerAddress", "")),
            )
            for node in ray.nodes()  # type: ignore[no-untyped-call]
            if node.get("Alive") and node.get("Resources")
        ]
    finally:
        ray.shutdown()


def shared_paths(cfg: ExperimentConfig, run_dir: Path) -> dict[str, str]:
    """Paths that clients on every node read and write in this run (key -> path)."""
    paths: dict[str, str] = {}
    if cfg.client_state_mode == "disk":
        paths["client-state-dir"] = str(
            Path(cfg.client_state_dir or run_dir / "client-state").resolve()
        )
    if cfg.feature_cache == "disk":
        paths["feature-cache-dir"] = str(Path(feature_cache_dir(cfg)).resolve())
    return paths


def warn_unshared(
    cfg: ExperimentConfig, run_dir: Path, address: str, nodes: Sequence[NodeResources]
) -> None:
    """Log the paths that every host of a multi-host cluster must see at the same place.

    Sharing cannot be checked from here; nodes on one host share them trivially.
    """
    hosts = sorted({n.host for n in nodes})
    paths = shared_paths(cfg, run_dir)
    if len(hosts) < 2 or not paths:
        return
    listed = ", ".join(f"{key} = {path}" for key, path in paths.items())
    logger.warning(
        "the Ray cluster at '%s' spans %d hosts (%s): clients on every host read and write %s; "
        "put them on a directory every host mounts at the same path (NFS or similar), or "
        "clients lose their state and features when Ray moves them",
        address,
        len(hosts),
        ", ".join(hosts),
        listed,
    )


def backend_config(
    cfg: ExperimentConfig, nodes: Sequence[NodeResources] | None = None
) -> dict[str, Any]:
    """Ray backend settings: per-client CPU/GPU resources, and where Ray runs.

    A local Ray (``ray_address(cfg)`` empty or ``"local"``) gets this machine's
    CPU and GPU counts; attaching to a cluster passes only its ``address`` (Ray
    refuses counts then) and checks the clients fit the cluster's ``nodes``
    (read with :func:`probe_cluster` when not given).
    """
    client_resources = {"num_cpus": cfg.client_num_cpus, "num_gpus": cfg.client_num_gpus}
    address = ray_address(cfg)
    if address in ("", LOCAL_RAY):
        cpus = os.cpu_count() or 1
        gpus = visible_gpus()
        _check_local(cfg, cpus, gpus)
        init_args: dict[str, Any] = {"num_cpus": cpus, "num_gpus": gpus, "include_dashboard": False}
        if address == LOCAL_RAY:
            init_args["address"] = LOCAL_RAY  # ignore RAY_ADDRESS
        return {"client_resources": client_resources, "init_args": init_args}
    check_cluster(cfg, address, probe_cluster(address) if nodes is None else nodes)
    return {
        "client_resources": client_resources,
        "init_args": {"address": address, "include_dashboard": False},
    }


@contextmanager
def indexed_message_lookup() -> Iterator[None]:
    """Flower's in-memory LinkState finds a node's messages through an index while this runs.

    Flower 1.41's simulation engine asks the LinkState for each node's next
    message, for every node every 0.1 s, and ``InMemoryLinkState.get_message_ins``
    checks every stored message for each ask: O(nodes x messages) a tick, about
    10 us a check. With 1,000 nodes and 200 messages that is ~2 s of the driver's
    CPU a tick; at 10,000 nodes querying all of them, minutes. Here the messages
    are also indexed by destination when stored, and a node's ask checks only its
    own, in the same order and with the same expiry check and delivery marking,
    so each node gets the messages it got before. The original methods are back
    when the block ends.
    """
    import flwr

    if not flwr.__version__.startswith("1.41."):  # written against 1.41's LinkState
        yield
        return
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.supercore.date import now

    cls: Any = InMemoryLinkState
    original_store, original_get = cls.store_message_ins, cls.get_message_ins

    def index_of(state: Any) -> dict[int, dict[str, None]]:
        index: dict[int, dict[str, None]] | None = state.__dict__.get("_fedmtl_by_node")
        if index is None:
            index = state.__dict__["_fedmtl_by_node"] = {}
        return index

    def store_message_ins(self: Any, message: Any) -> str | None:
        message_id: str | None = original_store(self, message)
        if message_id is not None:
            with self.lock:
                if message_id in self.message_ins_store:
                    node = self.message_ins_store[message_id].metadata.dst_node_id
                    index_of(self).setdefault(node, {})[message_id] = None
        return message_id

    def get_message_ins(
        self: Any, node_id: int, limit: int | None, *, run_id: int | None = None
    ) -> list[Any]:
        if limit is not None and limit < 1:
            raise AssertionError("`limit` must be >= 1")
        found: list[Any] = []
        with self.lock:
            pending = index_of(self).get(node_id, {})
            for msg_id in list(pending):
                self._check_stored_messages({msg_id})
                msg_ins = self.message_ins_store.get(msg_id)
                if msg_ins is None:  # replied to and pulled, or expired
                    del pending[msg_id]
                    continue
                if (
                    msg_ins.metadata.dst_node_id == node_id
                    and (run_id is None or msg_ins.metadata.run_id == run_id)
                    and msg_ins.metadata.delivered_at == ""
                ):
                    found.append(msg_ins)
                if limit and len(found) == limit:
                    break
        delivered_at = now().isoformat()
        for msg_ins in found:
            msg_ins.metadata.delivered_at = delivered_at
        return found

    cls.store_message_ins, cls.get_message_ins = store_message_ins, get_message_ins
    try:
        yield
    finally:
        cls.store_message_ins, cls.get_message_ins = original_store, original_get


def simulate(
    cfg: ExperimentConfig,
    run_dir: Path | None = None,
    verbose: bool = False,
    client_mods: list[Mod] | None = None,
    resume: bool = False,
) -> Path:
    """Run ``cfg`` with ``run_simulation`` on Ray; return the run directory.

    ``client_mods`` are Flower client mods added to every ClientApp (tests use
    one to record what leaves the clients); inside them sits the attack mod
    (:func:`fedmtl.attacks.attack_mod`, a pass-through when nobody attacks),
    which only simulation installs. With ``resume``, ``run_dir`` is an
    existing run that saved a checkpoint; it continues from there.
    """
    from flwr.simulation import run_simulation

    cfg = resolve_run(cfg)  # strategy checked, its scope preset applied (idempotent)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Ray hides GPUs from clients that asked for none (client-num-gpus = 0 trains on CPU);
    # its opt-out (RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0) would let them all use GPU 0 uncounted.
    warnings.filterwarnings(
        "ignore", message="Tip: In future versions of Ray, Ray will no longer override"
    )
    address = ray_address(cfg)
    nodes = None if address in ("", LOCAL_RAY) else probe_cluster(address)
    backend = backend_config(cfg, nodes)
    checkpoint = None
    if resume:
        if run_dir is None:
            raise ValueError("resume needs the run directory to continue")
        try:
            checkpoint = load_checkpoint(run_dir)
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError("checkpoint-every", str(exc)) from None
    check_run_inputs(cfg)
    run = RunDirectory(run_dir) if run_dir is not None else RunDirectory.create(cfg)
    # Ray workers need not share this process's working directory.
    cfg = dataclasses.replace(
        cfg,
        feature_cache_dir=str(Path(feature_cache_dir(cfg)).resolve()),
        client_state_dir=str(Path(cfg.client_state_dir or run.path / "client-state").resolve()),
    )
    if nodes is not None:
        warn_unshared(cfg, run.path, address, nodes)
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    # memory feature cache: a directory of this run that every local Ray worker shares.
    with run_feature_store(cfg.feature_cache == "memory"), indexed_message_lookup():
        run_simulation(
            server_app=make_server_app(cfg, run.path, checkpoint),
            client_app=make_client_app(cfg, [*(client_mods or []), attack_mod(cfg)]),
            num_supernodes=cfg.num_clients,
            backend_config=backend,
            verbose_logging=verbose,
        )
    return run.path
