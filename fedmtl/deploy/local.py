"""A real Flower deployment on this machine: SuperLink, SuperNodes, ``flwr run``.

``fedmtl deploy local`` runs what an operator runs on real devices, with real
``flower-superlink`` and ``flower-supernode`` processes on 127.0.0.1:

1. TLS files and node keys (:mod:`fedmtl.deploy.certs`), per-node data files
   (:mod:`fedmtl.deploy.device_files`), and a ``flwr`` connection in a private
   ``FLWR_HOME`` (so the user's own ``~/.flwr`` is never touched);
2. the SuperLink (TLS, node authentication, runtime dependency installation
   disabled, its own database);
3. ``flwr supernode register`` for each node's public key;
4. one SuperNode per node, each with its data file(s), task(s) and state
   directory in ``--node-config`` (one file per task it holds);
5. ``flwr run <app> <connection> --stream``, the run directory named in the run
   config (``run-dir``; ``resume`` to continue a run from its checkpoint, see
   :func:`resume_options`), with these options in its ``deployment.json``;
6. SIGTERM to every process group it started (SIGKILL after a grace period),
   also when anything above fails or the user presses Ctrl-C.

Every process writes to ``<workdir>/logs/``; their PIDs are in
``<workdir>/pids.json`` while they run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fedmtl.atomic import atomic_write_text
from fedmtl.config import (
    RESUME_KEY,
    RUN_DIR_KEY,
    ConfigError,
    load_experiment,
    parse_override,
    partition_spec,
)
from fedmtl.deploy.certs import NodeKey, TlsFiles, write_node_key, write_tls_files
from fedmtl.deploy.device_files import DeviceFile, write_device_files
from fedmtl.results import RunDirectory

CONNECTION = "fedmtl-local"
APP_DIR = Path(__file__).resolve().parents[2]  # fedmtl's Flower App: the repository root
STOP_GRACE_S = 15.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FLOWER_LOG_LEVELS = ("INFO", "DEBUG", "WARNING")
#: In a deployed run's directory: the :class:`DeployOptions` that started it.
DEPLOYMENT_FILE = "deployment.json"


class DeploymentError(RuntimeError):
    """A step of the local deployment failed; the message says which and where the log is."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _executable(name: str) -> str:
    # The console scripts installed beside this Python (a venv need not be on PATH).
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def node_config_text(entries: Mapping[str, str | int]) -> str:
    """Format ``--node-config`` entries (strings quoted, as Flower parses them)."""
    return " ".join(
        f"{key}={json.dumps(value) if isinstance(value, str) else value}"
        for key, value in entries.items()
    )


@dataclass(frozen=True)
class DeployOptions:
    """What to deploy and how.

    Parameters
    ----------
    workdir : Path
        Everything goes here: certificates, keys, data, state, logs, runs.
    nodes : int
        Number of SuperNodes; node ``i`` holds client ``i``'s partition.
    tls, auth : bool
        TLS between all parties; SuperNode authentication by registered keys.
    experiment : str
        Experiment name or TOML path (the ServerApp and ClientApps read it).
    overrides : tuple of str
        ``key=value`` experiment overrides, as ``fedmtl simulate --set``.
    app_dir : Path
        The Flower App ``flwr run`` packages (the repository root).
    round_timeout_s : float
        Per-round timeout handed to the run (a vanished node costs at most this).
    resume : Path, optional
        A run directory of an earlier deployment with these options: the run
        continues from its checkpoint, the devices from their state.
    """

    workdir: Path
    nodes: int = 3
    tls: bool = True
    auth: bool = True
    experiment: str = "digits"
    overrides: tuple[str, ...] = ()
    app_dir: Path = APP_DIR
    round_timeout_s: float = 120.0
    resume: Path | None = None

    def to_json(self) -> dict[str, Any]:
        """What :meth:`from_json` reads back (``resume`` is not kept)."""
        return {
            "workdir": str(self.workdir.resolve()),
            "nodes": self.nodes,
            "tls": self.tls,
            "auth": self.auth,
            "experiment": self.experiment,
            "overrides": list(self.overrides),
            "app-dir": str(self.app_dir.resolve()),
            "round-timeout-s": self.round_timeout_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeployOptions:
        """Options saved with :meth:`to_json`."""
        return cls(
            workdir=Path(data["workdir"]),
            nodes=int(data["nodes"]),
            tls=bool(data["tls"]),
            auth=bool(data["auth"]),
            experiment=str(data["experiment"]),
            overrides=tuple(str(o) for o in data["overrides"]),
            app_dir=Path(data["app-dir"]),
            round_timeout_s=float(data["round-timeout-s"]),
        )


def resume_options(run_dir: Path, overrides: tuple[str, ...] = ()) -> DeployOptions:
    """The options to resume the deployed run in ``run_dir`` (``num-rounds`` may change).

    Raises
    ------
    ConfigError
        Naming ``resume`` when ``run_dir`` holds no ``deployment.json`` (it was not
        started by ``fedmtl deploy local``), or the key of an override other
        than ``num-rounds``.
    """
    record = run_dir / DEPLOYMENT_FILE
    try:
        options = DeployOptions.from_json(json.loads(record.read_text()))
    except FileNotFoundError:
        raise ConfigError(
            RESUME_KEY,
            f"{record} not found: '{run_dir}' is not a run started by `fedmtl deploy local`",
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(RESUME_KEY, f"{record} is not readable ({exc!r})") from None
    changed = [key for key, _ in map(parse_override, overrides) if key != "num-rounds"]
    if changed:
        raise ConfigError(
            changed[0], "a resumed deployment keeps its config; only num-rounds may change"
        )
    return dataclasses.replace(
        options, overrides=(*options.overrides, *overrides), resume=run_dir.resolve()
    )


@dataclass
class LocalFederation:
    """Start, watch and stop the processes of one local deployment.

    Use as a context manager: leaving it stops every process it started.
    """

    options: DeployOptions
    host: str = "127.0.0.1"
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir = self.options.workdir.resolve()
        self.logs = self.workdir / "logs"
        self.flwr_home = self.workdir / "flwr-home"
        self.port = free_port(self.host)
        self.address = f"{self.host}:{self.port}"
        self.tls_files: TlsFiles | None = None
        self.keys: dict[int, NodeKey] = {}
        self.devices: list[DeviceFile] = []
        self.node_ports: dict[int, int] = {}
        self._resume = self.options.resume
        self._run_dir: Path | None = self.options.resume
        self._submitted_at = 0.0

    # ------------------------------------------------------------ preparation
    def run_overrides(self) -> dict[str, Any]:
        """User overrides plus what a deployment of ``nodes`` devices needs.

        The server expects ``nodes`` clients, and only the tasks the devices
        hold (node ``i`` holds the experiment's client ``i``). When a node holds
        several tasks (or the experiment lists them), the run's assignment is
        the nodes' own: ``task-assignment = "lists"`` with each node's tasks.
        """
        values = dict(parse_override(text) for text in self.options.overrides)
        source = load_experiment(self.options.experiment, self._source_overrides())
        nodes = partition_spec(source).assignment()[: self.options.nodes]
        held = {task for tasks in nodes for task in tasks}
        values.setdefault("num-clients", self.options.nodes)
        values.setdefault("tasks", [task for task in source.tasks if task in held])
        if source.task_assignment == "lists" or any(len(tasks) > 1 for tasks in nodes):
            values["task-assignment"] = "lists"
            values["client-tasks"] = ["+".join(tasks) for tasks in nodes]
            values["tasks-per-client"] = max(len(tasks) for tasks in nodes)
        values.setdefault("task-assignment", "round-robin")  # devices say which task they hold
        values.setdefault("round-timeout-s", self.options.round_timeout_s)
        values.setdefault("output-dir", str(self.workdir / "runs"))
        return values

    def prepare(self) -> None:
        """Write TLS files, node keys, device data files and the ``flwr`` connection."""
        if not (self.options.app_dir / "pyproject.toml").is_file():
            raise DeploymentError(
                f"--app {self.options.app_dir} is not a Flower App (no pyproject.toml); "
                "pass the fedmtl repository root, or your own app's directory"
            )
        self.logs.mkdir(parents=True, exist_ok=True)
        source = load_experiment(self.options.experiment, self._source_overrides())
        if self.options.nodes > source.num_clients:
            raise DeploymentError(
                f"--nodes {self.options.nodes}: the experiment has only "
                f"{source.num_clients} clients' data to hand out"
            )
        ids = list(range(self.options.nodes))
        self.devices = write_device_files(source, self.workdir / "nodes", ids)
        if self.options.tls:
            self.tls_files = write_tls_files(self.workdir / "tls", (self.host, "localhost"))
        if self.options.auth:
            self.keys = {i: write_node_key(self.workdir / "keys", f"node-{i}") for i in ids}
        self._write_connection()

    def _source_overrides(self) -> dict[str, Any]:
        # Device files are cut from the experiment's own partitioning (its num-clients).
        values = dict(parse_override(text) for text in self.options.overrides)
        values.pop("num-clients", None)
        return values

    def _write_connection(self) -> None:
        lines = [
            "[superlink]",
            f'default = "{CONNECTION}"',
            "",
            f"[superlink.{CONNECTION}]",
            f'address = "{self.address}"',
        ]
        if self.tls_files is not None:
            lines.append(f"root-certificates = {json.dumps(str(self.tls_files.ca_cert))}")
        else:
            lines.append("insecure = true")
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.flwr_home / "config.toml", "\n".join(lines) + "\n")

    def launch(self, echo: bool = False) -> None:
        """Prepare, start the SuperLink, register every node and start its SuperNode."""
        say = print if echo else (lambda *_, **__: None)
        self.prepare()
        say(f"fedmtl deploy: files in {self.workdir}", flush=True)
        self.start_superlink()
        tls = "TLS" if self.tls_files else "no TLS (insecure)"
        auth = "node authentication" if self.options.auth else "no node authentication"
        say(f"fedmtl deploy: SuperLink on {self.address}, {tls}, {auth}", flush=True)
        for node in range(self.options.nodes):
            if self.options.auth:
                self.register(node)
            self.start_supernode(node)
        tasks = ", ".join(f"node {d.client_id}: {d.task}" for d in self.devices)
        say(f"fedmtl deploy: {self.options.nodes} SuperNodes ({tasks})", flush=True)

    # ---------------------------------------------------------------- processes
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FLWR_HOME"] = str(self.flwr_home)
        # Flower starts its own helpers (flower-superexec, flwr-clientapp) by name.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        self._logs.append(log)
        log.write(f"$ {shlex.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._env(),
            cwd=self.workdir,
            start_new_session=True,  # its own process group: children stop with it
        )
        self.processes[name] = process
        self._write_pids()
        return process

    def _write_pids(self) -> None:
        alive = {name: p.pid for name, p in self.processes.items() if p.poll() is None}
        atomic_write_text(self.workdir / "pids.json", json.dumps(alive, indent=1) + "\n")

    def log_tail(self, name: str, lines: int = 15) -> str:
        """The last ``lines`` lines of process ``name``'s log."""
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def start_superlink(self, timeout_s: float = 60.0) -> None:
        """Start the SuperLink and wait until it accepts connections."""
        command = [
            _executable("flower-superlink"),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--database",
            str(self.workdir / self._database()),
            "--disable-runtime-dependency-installation",
        ]
        if self.tls_files is not None:
            command += [
                "--ssl-ca-certfile",
                str(self.tls_files.ca_cert),
                "--ssl-certfile",
                str(self.tls_files.server_cert),
                "--ssl-keyfile",
                str(self.tls_files.server_key),
            ]
        else:
            command.append("--insecure")
        if self.options.auth:
            command.append("--enable-supernode-auth")
        process = self._start("superlink", command)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DeploymentError(
                    f"flower-superlink exited with {process.returncode}; "
                    f"log {self.logs / 'superlink.log'}:\n{self.log_tail('superlink')}"
                )
            if self._listening() and self.cli(["supernode", "list"], check=False)[0] == 0:
                return
            time.sleep(0.5)
        raise DeploymentError(f"flower-superlink not ready after {timeout_s:.0f} s")

    def _database(self) -> str:
        # A resumed deployment's SuperLink starts afresh: the old one's runs and nodes are gone.
        if self.options.resume is None:
            return "superlink.db"
        return time.strftime("superlink-resumed-%Y%m%d-%H%M%S.db")

    def _listening(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            return probe.connect_ex((self.host, self.port)) == 0

    def cli(self, arguments: list[str], check: bool = True) -> tuple[int, str]:
        """Run ``flwr <arguments>`` against this deployment's SuperLink; (status, output)."""
        command = [_executable("flwr"), *arguments]
        done = subprocess.run(
            command, capture_output=True, text=True, env=self._env(), cwd=self.workdir
        )
        output = done.stdout + done.stderr
        if check and done.returncode != 0:
            raise DeploymentError(f"`{shlex.join(command)}` failed ({done.returncode}):\n{output}")
        return done.returncode, output

    def register(self, node: int) -> None:
        """Register node ``node``'s public key with the SuperLink."""
        self.cli(["supernode", "register", str(self.keys[node].public), CONNECTION])

    def start_supernode(self, node: int) -> subprocess.Popen[bytes]:
        """Start SuperNode ``node`` with its data, task, state directory and key (if auth)."""
        device = self.devices[node]
        state_dir = self.workdir / "nodes" / f"node-{device.client_id}" / "state"
        port = self.node_ports.setdefault(node, free_port(self.host))
        command = [
            _executable("flower-supernode"),
            "--superlink",
            self.address,
            "--port",
            str(port),
            "--node-config",
            node_config_text(device.node_config(state_dir)),
        ]
        if self.tls_files is not None:
            command += ["--root-certificates", str(self.tls_files.ca_cert)]
        else:
            command.append("--insecure")
        key = self.keys.get(node)
        if key is not None:
            command += ["--auth-supernode-private-key", str(key.private)]
        return self._start(f"supernode-{node}", command)

    def run_dir(self) -> Path:
        """The run's directory: ``resume``'s, else a new ``<output-dir>/<name>-<time>``."""
        if self._run_dir is None:
            root = Path(str(self.run_overrides()["output-dir"])).resolve()
            name = load_experiment(self.options.experiment, self._source_overrides()).name
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path, suffix = root / f"{name}-{stamp}", 1
            while path.exists():
                suffix += 1
                path = root / f"{name}-{stamp}-{suffix}"
            self._run_dir = path
        return self._run_dir

    def run_config(self) -> dict[str, str]:
        """The ``--run-config`` of the run: experiment, overrides, run directory (or resume)."""
        overrides = " ".join(
            shlex.quote(f"{key}={_toml(value)}") for key, value in self.run_overrides().items()
        )
        experiment = self.options.experiment
        if Path(experiment).is_file():  # the apps run in other working directories
            experiment = str(Path(experiment).resolve())
        key = RESUME_KEY if self._resume is not None else RUN_DIR_KEY
        return {"experiment": experiment, "overrides": overrides, key: str(self.run_dir())}

    def submit(self, resume: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``flwr run`` (streaming the ServerApp's output to ``logs/run.log``).

        With ``resume`` (or the options'), the run continues that run directory
        from its checkpoint. The run directory gets this deployment's options
        (``deployment.json``), which ``fedmtl deploy local --resume`` reads.
        """
        if resume is not None:
            self._resume = self._run_dir = resume.resolve()
        self._submitted_at = time.time()
        run_config = self.workdir / "run-config.toml"
        atomic_write_text(
            run_config,
            "".join(f"{key} = {json.dumps(value)}\n" for key, value in self.run_config().items()),
        )
        self.run_dir().mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.run_dir() / DEPLOYMENT_FILE, json.dumps(self.options.to_json(), indent=1) + "\n"
        )
        command = [
            _executable("flwr"),
            "run",
            str(self.options.app_dir.resolve()),
            CONNECTION,
            "--run-config",
            str(run_config),
            "--stream",
        ]
        return self._start("run", command)

    def wait_run(
        self, process: subprocess.Popen[bytes], timeout_s: float, echo: bool = False
    ) -> Path:
        """Wait for ``flwr run`` to end; return the run directory with its summary.

        ``flwr run --stream`` exits 0 even when the run failed, so success is
        judged by the ServerApp's ``summary.json``. With ``echo``, the
        ServerApp's own output (rounds, tables) is printed as it comes.
        """
        deadline = time.monotonic() + timeout_s
        shown = 0
        while process.poll() is None:
            if time.monotonic() > deadline:
                raise DeploymentError(
                    f"the run did not finish in {timeout_s:.0f} s; logs in {self.logs}"
                )
            shown = self._echo_run_output(shown) if echo else shown
            time.sleep(0.5)
        if echo:
            self._echo_run_output(shown)
        summary = self.run_dir() / "summary.json"
        fresh = summary.exists() and summary.stat().st_mtime >= self._submitted_at - 1.0
        if not fresh or "config" not in json.loads(summary.read_text()):
            raise DeploymentError(
                f"the run failed; its output ({self.logs / 'run.log'}):\n{self.log_tail('run', 30)}"
            )
        outcome = RunDirectory(summary.parent).outcome()  # e.g. every round was skipped
        if outcome.failed:
            raise DeploymentError(
                f"the run failed: {outcome.failure}; results so far are in {summary.parent}"
            )
        return summary.parent

    def _echo_run_output(self, offset: int) -> int:
        """Print the ServerApp's lines of ``run.log`` after byte ``offset`` (not Flower's logs)."""
        path = self.logs / "run.log"
        if not path.exists():
            return offset
        with path.open("rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        for line in complete.decode(errors="replace").splitlines():
            plain = _ANSI.sub("", line)
            if not plain.startswith(_FLOWER_LOG_LEVELS) and not plain.startswith("$ "):
                print(plain, flush=True)
        return offset + len(complete)

    def stop(self, name: str, sig: int = signal.SIGTERM, grace_s: float = STOP_GRACE_S) -> int:
        """Stop process ``name`` and its children with ``sig``; SIGKILL after ``grace_s``.

        Returns the process's exit code, once no process of its group is left.
        """
        process = self.processes[name]
        if process.poll() is None:
            _signal_group(process.pid, sig)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        if not _group_gone(process.pid, grace_s):
            _signal_group(process.pid, signal.SIGKILL)  # children it left behind
            _group_gone(process.pid, grace_s)
        self._write_pids()
        return int(process.returncode)

    def stop_all(self) -> None:
        """Stop SuperNodes and ``flwr run`` first, then the SuperLink; close the logs."""
        order = sorted(self.processes, key=lambda name: name == "superlink")
        for name in order:
            self.stop(name)
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _signal_group(group: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone, children included
        os.killpg(group, sig)


def _group_gone(group: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` until no process of ``group`` is left."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _toml(value: Any, inside: bool = False) -> str:
    """An override value as ``parse_override`` reads it back (bare strings at the top)."""
    if isinstance(value, str):
        return json.dumps(value) if inside else value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item, inside=True) for item in value) + "]"
    return str(value)


@contextmanager
def _interrupt_as_exit() -> Iterator[None]:
    # SIGTERM to `fedmtl deploy` should clean up like Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def deploy_local(options: DeployOptions, run_timeout_s: float = 3600.0) -> Path:
    """Launch, run and stop a local deployment; return the run directory.

    Raises
    ------
    DeploymentError
        When a process fails to start or the run fails; every process is stopped first.
    """
    with _interrupt_as_exit(), LocalFederation(options) as federation:
        federation.launch(echo=True)
        if options.resume is not None:
            print(f"fedmtl deploy: resuming {options.resume} from its checkpoint", flush=True)
        run = federation.submit()
        print(
            f"fedmtl deploy: flwr run (all its output: {federation.logs / 'run.log'})", flush=True
        )
        run_dir = federation.wait_run(run, run_timeout_s, echo=True)
    print(f"fedmtl deploy: done, every process stopped; results in {run_dir}", flush=True)
    return run_dir


def stop_recorded(workdir: str | Path) -> list[str]:
    """Stop the processes a deployment recorded in ``pids.json`` (after it was killed).

    Returns the names of the processes that were still running.
    """
    path = Path(workdir) / "pids.json"
    if not path.exists():
        return []
    stopped = []
    for name, pid in json.loads(path.read_text()).items():
        try:
            os.killpg(int(pid), signal.SIGTERM)
            stopped.append(name)
        except ProcessLookupError:
            continue
    atomic_write_text(path, "{}\n")
    return stopped
