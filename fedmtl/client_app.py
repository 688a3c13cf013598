"""Flower ClientApp: decode the message, call the strategy's client routine, encode the reply.

The same app serves every runtime. In simulation a node's ``partition-id``
selects its data and task. Handlers are thin: they decode a message into an
:class:`~fedmtl.records.Instruction` and a :class:`~fedmtl.routines.LocalWork`,
call the client routine the server's config names (:mod:`fedmtl.routines`;
plain torch below it in :mod:`fedmtl.training`), keep the client's state and
encode the reply (the wire layout is :mod:`fedmtl.records`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import torch
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from fedmtl.assembly import experiment_from_run_config, resolved
from fedmtl.client_state import ClientStateStore
from fedmtl.config import ConfigError, ExperimentConfig, deployment_run_dir, partition_spec
from fedmtl.data import ClientData, client_tasks
from fedmtl.data.device import device_tasks
from fedmtl.features import (
    FeatureCache,
    backbone_fingerprint,
    extract_features,
    feature_key,
    run_store_dir,
)
from fedmtl.models import MultiTaskModel
from fedmtl.models.state import export_arrays
from fedmtl.poisoning import HONEST, TRAIN_LABELS, relabel
from fedmtl.privacy import transformed_reply
from fedmtl.private_training import DP_SGD_STATE, DpSgdSettings, PrivacyLedger
from fedmtl.records import (
    ARRAYS,
    CLIENT,
    DP_SGD_DELTA,
    DP_SGD_EPSILON,
    TASK_ARRAYS,
    ClientInfo,
    Instruction,
    NDArrays,
    from_record,
    reply_content,
    to_record,
)
from fedmtl.routines import LOCAL_STATE, ClientKeys, LocalWork, Trained, routine_for
from fedmtl.run_model import fresh_model, initial_model, run_device, run_scopes
from fedmtl.scopes import keys_in, task_relevant
from fedmtl.task_weighting import TaskWeighting, WeightingOptions, make_weighting
from fedmtl.training import TrainSettings, client_seed

T = TypeVar("T")


@dataclass(frozen=True)
class ClientSetup:
    """What a client derives from the config once: its tasks' data and its model's keys by scope."""

    tasks: tuple[ClientData, ...]
    keys: ClientKeys

    @property
    def client_id(self) -> int:
        """The client's id."""
        return self.tasks[0].client_id

    @property
    def frozen_backbone(self) -> bool:
        """Whether no backbone parameter trains (then features can be cached)."""
        return not any(k.startswith("backbone.") for k in self.keys.trainable)


@lru_cache(maxsize=4096)
def client_setup(cfg: ExperimentConfig, client_id: int, labels: str = HONEST) -> ClientSetup:
    """Data, tasks and scoped keys of one simulated client (cached per Ray worker)."""
    return _setup_from(cfg, client_tasks(partition_spec(cfg), client_id), labels)


@lru_cache(maxsize=4)
def device_setup(
    cfg: ExperimentConfig, node_config: tuple[tuple[str, Any], ...], node_id: int
) -> ClientSetup:
    """Data, tasks and scoped keys of a deployed client, from its node config (cached)."""
    spec = partition_spec(cfg)
    node = dict(node_config)
    tasks = device_tasks(node, spec.dataset_spec(), cfg.tasks, cfg.seed, cfg.test_fraction, node_id)
    return _setup_from(cfg, tasks, str(node.get(TRAIN_LABELS, HONEST)))


def setup_for(context: Context, cfg: ExperimentConfig) -> ClientSetup:
    """The node's setup: a simulation partition (``partition-id``) or a device's own file.

    The node config's ``fedmtl.attacks.TRAIN_LABELS`` (set by the simulation's
    attack mod) names the labels the node trains on; absent: its true labels.
    """
    node = context.node_config
    if "partition-id" in node:
        labels = str(node.get(TRAIN_LABELS, HONEST))
        return client_setup(cfg, int(node["partition-id"]), labels)
    return device_setup(cfg, tuple(sorted(node.items())), context.node_id)


@lru_cache(maxsize=64)
def _client_keys(cfg: ExperimentConfig, held: tuple[str, ...]) -> ClientKeys:
    """The scoped keys of a client holding tasks ``held`` (one walk of the model per task set).

    Built per client, this walked the whole model for every message of a run with
    more clients than :func:`client_setup` caches (10,000 clients).
    """
    model = initial_model(cfg)
    scopes = run_scopes(cfg)
    mine = {k: s for k, s in scopes.items() if any(task_relevant(k, task) for task in held)}
    parameters = {name for name, _ in model.named_parameters()}
    return ClientKeys(
        shared=tuple(keys_in(scopes, "shared")),
        task=tuple(keys_in(mine, "task")),
        local=tuple(keys_in(mine, "local")),
        trainable=frozenset(k for k, s in mine.items() if s != "frozen" and k in parameters),
    )


def _setup_from(cfg: ExperimentConfig, tasks: tuple[ClientData, ...], labels: str) -> ClientSetup:
    dataset = partition_spec(cfg).dataset_spec()
    keys = _client_keys(cfg, tuple(d.task for d in tasks))
    relabelled = tuple(relabel(d, labels, dataset.tasks[d.task].num_outputs) for d in tasks)
    return ClientSetup(tasks=relabelled, keys=keys)


@lru_cache(maxsize=4)
def _backbone_id(cfg: ExperimentConfig) -> str:
    return backbone_fingerprint(initial_model(cfg).backbone)


@lru_cache(maxsize=4)
def feature_cache(mode: str, directory: str) -> FeatureCache:
    """The feature cache of this process for a mode and directory (one per Ray worker)."""
    return FeatureCache(mode, directory or None)


def feature_cache_dir(cfg: ExperimentConfig) -> str:
    """The disk cache directory of ``cfg`` (default ``<output-dir>/feature-cache``)."""
    return cfg.feature_cache_dir or str(Path(cfg.output_dir) / "feature-cache")


def feature_store_dir(cfg: ExperimentConfig) -> str:
    """Where this process's features are shared: ``disk``'s directory, else the run's own.

    ``memory`` shares them through the temporary directory ``fedmtl simulate``
    gives the run (:func:`fedmtl.features.run_feature_store`); without one (a
    device) they stay in this process's memory.
    """
    return feature_cache_dir(cfg) if cfg.feature_cache == "disk" else run_store_dir()


def client_features(
    cfg: ExperimentConfig, setup: ClientSetup, data: ClientData, split: str, model: MultiTaskModel
) -> torch.Tensor | None:
    """Backbone features of a task's ``split`` when the client's backbone is frozen, else None.

    ``model``'s backbone computes them on a cache miss; it equals the initial
    backbone because nothing in a frozen backbone ever changes.
    """
    if not setup.frozen_backbone:
        return None
    inputs = data.x_train if split == "train" else data.x_test
    cache = feature_cache(cfg.feature_cache, feature_store_dir(cfg))
    device = run_device(cfg)
    return cache.get(
        feature_key(_backbone_id(cfg), inputs),
        lambda: extract_features(model.backbone, inputs, device),
    )


@lru_cache(maxsize=4)
def _store(mode: str, directory: str) -> ClientStateStore:
    return ClientStateStore(mode, directory or None)


def client_state_dir(cfg: ExperimentConfig) -> str:
    """The disk client-state directory of ``cfg`` (default ``<output-dir>/client-state``)."""
    return cfg.client_state_dir or str(Path(cfg.output_dir) / "client-state")


def state_store(cfg: ExperimentConfig, context: Context | None = None) -> ClientStateStore:
    """Where this client keeps its state: a device's ``state-dir``, else the run's store.

    A deployed node started with ``--node-config "state-dir='/var/lib/fedmtl'"``
    keeps its head and local state on its own disk, across SuperNode restarts,
    under ``run-<run id>/``: a new run starts from the pretrained model, as its
    server does, and never picks up a head of an earlier run. A run whose
    ``run_config`` names its run directory (``run-dir``, or ``resume`` when a
    restarted deployment continues it under a new run id) keeps it under
    ``run-<that directory's name>/`` instead, so the resumed run finds it.
    """
    if context is not None and "state-dir" in context.node_config:
        root = Path(str(context.node_config["state-dir"])).expanduser()
        run_dir, _ = deployment_run_dir(context.run_config)
        name = Path(run_dir).name if run_dir else context.run_id
        return _store("disk", str(root / f"run-{name}"))
    return _store(cfg.client_state_mode, client_state_dir(cfg))


def _info(setup: ClientSetup) -> ClientInfo:
    return ClientInfo.holding(setup.client_id, [d.task for d in setup.tasks])


#: State group of the client's task weighting (e.g. uncertainty weighting's log-variances).
WEIGHTING_STATE = "fedmtl-task-weighting"


def task_weighting(
    cfg: ExperimentConfig, setup: ClientSetup, state: dict[str, NDArrays], seed: int
) -> TaskWeighting:
    """The client's task weighting (``task-weighting``), resumed from its saved state."""
    options = WeightingOptions(weights=dict(cfg.task_weights), temperature=cfg.dwa_temperature)
    weighting = make_weighting(cfg.task_weighting, [d.task for d in setup.tasks], options, seed)
    if WEIGHTING_STATE in state:
        weighting.load_state(state[WEIGHTING_STATE])
    return weighting


def dp_sgd_ledger(cfg: ExperimentConfig, state: dict[str, NDArrays]) -> PrivacyLedger | None:
    """The client's DP-SGD ledger (``dp-sgd = true``), resumed from its saved history."""
    if not cfg.dp_sgd:
        return None
    settings = DpSgdSettings(
        noise_multiplier=cfg.dp_sgd_noise_multiplier,
        max_grad_norm=cfg.dp_sgd_max_grad_norm,
        delta=cfg.dp_sgd_delta,
        accountant=cfg.dp_sgd_accountant,
        seeded=cfg.dp_seeded_noise,
    )
    return PrivacyLedger.from_state(settings, state.get(DP_SGD_STATE))


def dp_sgd_metrics(ledger: PrivacyLedger | None) -> dict[str, float]:
    """The train metrics of a DP-SGD client: its ε so far (omitted if infinite) and δ."""
    if ledger is None:
        return {}
    eps = ledger.epsilon()
    shown = {DP_SGD_EPSILON: eps} if math.isfinite(eps) else {}
    return {**shown, DP_SGD_DELTA: ledger.settings.delta}


def _given(value: T | None, default: T) -> T:
    return default if value is None else value


def _settings(instruction: Instruction, cfg: ExperimentConfig, client_id: int) -> TrainSettings:
    """Local training settings: the server's instruction where it says, else the experiment's."""
    return TrainSettings(
        epochs=_given(instruction.local_epochs, cfg.local_epochs),
        batch_size=_given(instruction.batch_size, cfg.batch_size),
        learning_rate=_given(instruction.learning_rate, cfg.learning_rate),
        optimizer=cfg.optimizer,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        proximal_mu=instruction.proximal_mu,
        seed=client_seed(cfg.seed, instruction.server_round, client_id),
    )


def local_work(
    msg: Message,
    cfg: ExperimentConfig,
    setup: ClientSetup,
    instruction: Instruction,
    state: dict[str, NDArrays],
) -> LocalWork:
    """What the client's routine works with for ``msg`` (received arrays, state, settings)."""
    received = from_record(msg.content.array_records[ARRAYS])
    if TASK_ARRAYS in msg.content.array_records:
        received.update(from_record(msg.content.array_records[TASK_ARRAYS]))
    settings = _settings(instruction, cfg, setup.client_id)
    dataset = partition_spec(cfg).dataset_spec()
    return LocalWork(
        instruction=instruction,
        tasks=setup.tasks,
        keys=setup.keys,
        settings=settings,
        state=state,
        received=received,
        device=run_device(cfg),
        new_model=functools.partial(fresh_model, cfg),
        features=functools.partial(client_features, cfg, setup),
        objectives={d.task: dataset.tasks[d.task].objective for d in setup.tasks},
        weighting=task_weighting(cfg, setup, state, settings.seed),
        private=dp_sgd_ledger(cfg, state),
    )


def kept_state(work: LocalWork, trained: Trained, local_keys: tuple[str, ...]) -> dict[str, Any]:
    """What a client keeps after training: its local scope, the weighting's and DP-SGD's state.

    The routine's own state groups (``trained.state``) come last and win.
    """
    weights = work.weighting.state() if work.weighting else {}
    return {
        LOCAL_STATE: export_arrays(trained.model, local_keys),
        **({WEIGHTING_STATE: weights} if weights else {}),
        **({DP_SGD_STATE: work.private.state()} if work.private else {}),
        **trained.state,
    }


def handle_train(msg: Message, context: Context, cfg: ExperimentConfig) -> Message:
    """Run the strategy's client routine; keep the client's state; reply shared + task arrays.

    The server's config names the routine (``"client-routine"``, see
    :mod:`fedmtl.routines`) and its options; the local scope and any state the
    routine returns stay in the client's state store, never in the reply.
    """
    setup = setup_for(context, cfg)
    instruction = Instruction.from_content(msg.content)
    store = state_store(cfg, context)
    client, server_round = setup.client_id, instruction.server_round
    # The state this client had after the last round before this one.
    state = store.load(context, client, server_round - 1)
    work = local_work(msg, cfg, setup, instruction, state)
    trained = routine_for(instruction, cfg.strategy).train(work)
    model, keys = trained.model, setup.keys  # export_arrays copies to the CPU (no model walk)
    state = {**state, **kept_state(work, trained, keys.local)}
    store.save(context, client, server_round, state, instruction.checkpoint_round)
    content = reply_content(
        _info(setup),
        {**trained.metrics, **dp_sgd_metrics(work.private)},
        shared=to_record(export_arrays(model, keys.shared)),
        task=to_record(export_arrays(model, keys.task)) if keys.task else None,
    )
    # e.g. local DP: the client clips and noises what leaves it
    return Message(content=transformed_reply(cfg, msg, content), reply_to=msg)


def handle_evaluate(msg: Message, context: Context, cfg: ExperimentConfig) -> Message:
    """Run the strategy's client routine's evaluation on the client's test split.

    By default the client's model (shared + task + local) is measured; see
    :class:`fedmtl.routines.ClientRoutine` for head fine-tuning
    (``head-finetune-epochs``) and the global view (``global-view-epochs``).
    """
    setup = setup_for(context, cfg)
    instruction = Instruction.from_content(msg.content)
    state = state_store(cfg, context).load(context, setup.client_id, instruction.server_round)
    work = local_work(msg, cfg, setup, instruction, state)
    metrics = routine_for(instruction, cfg.strategy).evaluate(work)
    return Message(content=reply_content(_info(setup), metrics), reply_to=msg)


def handle_query(msg: Message, context: Context, cfg: ExperimentConfig) -> Message:
    """Tell the server which client this is and which tasks it holds."""
    setup = setup_for(context, cfg)
    return Message(content=RecordDict({CLIENT: _info(setup).to_record()}), reply_to=msg)


def make_client_app(
    config: ExperimentConfig | None = None, mods: list[Mod] | None = None
) -> ClientApp:
    """Build the ClientApp; without ``config`` it reads Flower's ``run_config``.

    ``mods`` are Flower client mods (they see every message in and out). A run
    read from ``run_config`` (``flwr run``, a deployment) cannot attack: the
    attack mod is installed by ``fedmtl simulate`` only.
    """
    app = ClientApp(mods=mods or [])

    def resolve(context: Context) -> ExperimentConfig:
        if config is not None:
            return resolved(config)
        cfg = experiment_from_run_config(context.run_config)
        if cfg.attack != "none":
            raise ConfigError("attack", "malicious clients run only under `fedmtl simulate`")
        return cfg

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        return handle_train(msg, context, resolve(context))

    @app.evaluate()
    def evaluate_(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        return handle_evaluate(msg, context, resolve(context))

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return handle_query(msg, context, resolve(context))

    return app


app = make_client_app()

__all__ = [
    "app",
    "handle_evaluate",
    "handle_query",
    "handle_train",
    "make_client_app",
]
