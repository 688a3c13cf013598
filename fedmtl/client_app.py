"""Flower ClientApp: decode the message, restore local state, train or evaluate, reply.

The same app serves every runtime. In simulation a node's ``partition-id``
selects its data and task. Handlers are thin: plain torch work lives in
:mod:`fedmtl.training`, the wire layout in :mod:`fedmtl.records`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from fedmtl.attacks import flip_labels, poison_update
from fedmtl.client_state import ClientStateStore
from fedmtl.config import ExperimentConfig, config_from_run_config, partition_spec
from fedmtl.data import ClientData, client_data
from fedmtl.data.device import device_data
from fedmtl.features import FeatureCache, backbone_fingerprint, extract_features, feature_key
from fedmtl.models import MultiTaskModel
from fedmtl.models.state import export_arrays, import_arrays
from fedmtl.panels import attackers
from fedmtl.records import (
    ARRAYS,
    CHECKPOINT_ROUND,
    CLIENT,
    CONFIG,
    GLOBAL_VIEW_EPOCHS,
    HEAD_EPOCHS,
    HEAD_FINETUNE_EPOCHS,
    PERSONAL_LAMBDA,
    TASK_ARRAYS,
    ClientInfo,
    NDArrays,
    from_record,
    reply_content,
    to_record,
)
from fedmtl.run_model import fresh_model, initial_model, run_scopes
from fedmtl.scopes import keys_in, task_relevant
from fedmtl.training import TrainSettings, evaluate, pick_device, train_local

LOCAL_STATE = "fedmtl-local"
PERSONAL_STATE = "fedmtl-personal"  # Ditto's personal model


@dataclass(frozen=True)
class ClientSetup:
    """What a client derives from the config once: its data, task and key scopes."""

    data: ClientData
    shared_keys: tuple[str, ...]
    task_keys: tuple[str, ...]
    local_keys: tuple[str, ...]
    trainable: frozenset[str]

    @property
    def personal_keys(self) -> tuple[str, ...]:
        """Every entry a client holds a value of its own for (all but the frozen scope)."""
        return self.shared_keys + self.task_keys + self.local_keys

    @property
    def frozen_backbone(self) -> bool:
        """Whether no backbone parameter trains (then features can be cached)."""
        return not any(k.startswith("backbone.") for k in self.trainable)


@lru_cache(maxsize=64)
def client_setup(cfg: ExperimentConfig, client_id: int) -> ClientSetup:
    """Data, task and scoped keys of one simulated client (cached per Ray worker)."""
    return _setup_from(cfg, client_data(partition_spec(cfg), client_id))


@lru_cache(maxsize=4)
def device_setup(
    cfg: ExperimentConfig, node_config: tuple[tuple[str, Any], ...], node_id: int
) -> ClientSetup:
    """Data, task and scoped keys of a deployed client, from its node config (cached)."""
    spec = partition_spec(cfg)
    data = device_data(
        dict(node_config), spec.dataset_spec(), cfg.tasks, cfg.seed, cfg.test_fraction, node_id
    )
    return _setup_from(cfg, data)


def setup_for(context: Context, cfg: ExperimentConfig) -> ClientSetup:
    """The node's setup: a simulation partition (``partition-id``) or a device's own file."""
    if "partition-id" in context.node_config:
        return client_setup(cfg, int(context.node_config["partition-id"]))
    return device_setup(cfg, tuple(sorted(context.node_config.items())), context.node_id)


def _setup_from(cfg: ExperimentConfig, data: ClientData) -> ClientSetup:
    model = initial_model(cfg)
    scopes = run_scopes(cfg)
    mine = {k: s for k, s in scopes.items() if task_relevant(k, data.task)}
    parameters = {name for name, _ in model.named_parameters()}
    return ClientSetup(
        data=data,
        shared_keys=tuple(keys_in(scopes, "shared")),
        task_keys=tuple(keys_in(mine, "task")),
        local_keys=tuple(keys_in(mine, "local")),
        trainable=frozenset(k for k, s in mine.items() if s != "frozen" and k in parameters),
    )


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


def client_features(
    cfg: ExperimentConfig, setup: ClientSetup, split: str, model: MultiTaskModel
) -> torch.Tensor | None:
    """Backbone features of the client's ``split`` when its backbone is frozen, else None.

    ``model``'s backbone computes them on a cache miss; it equals the initial
    backbone because nothing in a frozen backbone ever changes.
    """
    if not setup.frozen_backbone:
        return None
    inputs = setup.data.x_train if split == "train" else setup.data.x_test
    cache = feature_cache(cfg.feature_cache, feature_cache_dir(cfg))
    device = pick_device(cfg.device)
    return cache.get(
        feature_key(_backbone_id(cfg), inputs),
        lambda: extract_features(model.backbone, inputs, device),
    )


def _restore(msg: Message, cfg: ExperimentConfig, state: Mapping[str, NDArrays]) -> MultiTaskModel:
    """Initial model + server arrays (shared, task) + this client's local state."""
    model = fresh_model(cfg)
    import_arrays(model, from_record(msg.content.array_records[ARRAYS]))
    if TASK_ARRAYS in msg.content:
        import_arrays(model, from_record(msg.content.array_records[TASK_ARRAYS]))
    if LOCAL_STATE in state:
        import_arrays(model, state[LOCAL_STATE])
    return model


def _personal_model(
    msg: Message, cfg: ExperimentConfig, state: Mapping[str, NDArrays]
) -> MultiTaskModel:
    """Ditto's personal model: the client's own if it has one, else the received global one."""
    model = _restore(msg, cfg, state)
    if PERSONAL_STATE in state:
        import_arrays(model, state[PERSONAL_STATE])
    return model


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
    server does, and never picks up a head of an earlier run.
    """
    if context is not None and "state-dir" in context.node_config:
        root = Path(str(context.node_config["state-dir"])).expanduser()
        return _store("disk", str(root / f"run-{context.run_id}"))
    return _store(cfg.client_state_mode, client_state_dir(cfg))


def _server_round(server: ConfigRecord) -> int:
    return int(server.get("server-round", 0))  # type: ignore[arg-type]


def _info(setup: ClientSetup) -> ClientInfo:
    return ClientInfo(client_id=setup.data.client_id, task=setup.data.task)


def _settings(server: ConfigRecord, cfg: ExperimentConfig, client_id: int) -> TrainSettings:
    """Local training settings: the server's config where it says, else the experiment's."""
    round_ = int(server.get("server-round", 0))  # type: ignore[arg-type]
    return TrainSettings(
        epochs=int(server.get("local-epochs", cfg.local_epochs)),  # type: ignore[arg-type]
        batch_size=int(server.get("batch-size", cfg.batch_size)),  # type: ignore[arg-type]
        learning_rate=float(server.get("learning-rate", cfg.learning_rate)),  # type: ignore[arg-type]
        optimizer=cfg.optimizer,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        proximal_mu=float(server.get("proximal-mu", 0.0)),  # type: ignore[arg-type]
        seed=cfg.seed * 100_003 + round_ * 1009 + client_id,
    )


def _head_keys(model: MultiTaskModel, task: str) -> set[str]:
    return {name for name, _ in model.named_parameters() if name.startswith(f"heads.{task}.")}


def handle_train(msg: Message, context: Context, cfg: ExperimentConfig) -> Message:
    """Train locally; keep the local scope in the client state store; reply shared + task arrays.

    Strategy keys in the server's config change what "train locally" means:
    ``head-epochs`` (FedRep) fits the head alone first, then the body alone;
    ``personal-lambda`` (Ditto) also trains the client's personal model.
    """
    setup = setup_for(context, cfg)
    server = msg.content.config_records.get(CONFIG, ConfigRecord())
    data = setup.data
    store = state_store(cfg, context)
    # The state this client had after the last round before this one.
    state = store.load(context, data.client_id, _server_round(server) - 1)
    model = _restore(msg, cfg, state)
    settings = _settings(server, cfg, data.client_id)
    reference = {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if k in setup.shared_keys or k in setup.task_keys
    }
    features = client_features(cfg, setup, "train", model)
    device = pick_device(cfg.device)
    head_epochs = int(server.get(HEAD_EPOCHS, 0))  # type: ignore[arg-type]
    trainable = set(setup.trainable)

    attacker = data.client_id in attackers(cfg)
    labels = data.y_train
    if attacker and cfg.attack == "label-flip":
        num_classes = partition_spec(cfg).dataset_spec().tasks[data.task].num_outputs
        labels = flip_labels(labels, num_classes)

    def fit(target: MultiTaskModel, settings: TrainSettings, keys: set[str]) -> dict[str, float]:
        return train_local(
            target, data.task, data.x_train, labels, settings, keys, reference, device,
            features=features,
        )  # fmt: skip

    if head_epochs > 0:
        # FedRep: fit the head on the received body first, then train the body only.
        head = trainable & _head_keys(model, data.task)
        fit(model, dataclasses.replace(settings, epochs=head_epochs), head)
        trainable -= head
    result = fit(model, settings, trainable)
    model.cpu()
    state = {**state, LOCAL_STATE: export_arrays(model, setup.local_keys)}
    if PERSONAL_LAMBDA in server:
        # Ditto: the personal model is pulled towards the received global model.
        personal = _personal_model(msg, cfg, state)
        lam = float(server[PERSONAL_LAMBDA])  # type: ignore[arg-type]
        fit(
            personal,
            dataclasses.replace(settings, proximal_mu=lam, seed=settings.seed + 1),
            set(setup.trainable),
        )
        personal.cpu()
        state[PERSONAL_STATE] = export_arrays(personal, setup.personal_keys)
    checkpointed = server.get(CHECKPOINT_ROUND)  # absent: nothing to resume from, keep the newest
    keep_from = None if checkpointed is None else int(checkpointed)  # type: ignore[arg-type]
    store.save(context, data.client_id, _server_round(server), state, keep_from)
    shared = export_arrays(model, setup.shared_keys)
    task = export_arrays(model, setup.task_keys)
    if attacker:  # simulation only: a seeded fraction of clients sends poisoned updates
        received = {k: v.numpy() for k, v in reference.items()}
        shared = poison_update(cfg.attack, received, shared, cfg.attack_scale, settings.seed)
        task = poison_update(cfg.attack, received, task, cfg.attack_scale, settings.seed + 1)
    content = reply_content(
        _info(setup),
        {"num-examples": result["num-examples"], "loss": result["loss"]},
        shared=to_record(shared),
        task=to_record(task) if setup.task_keys else None,
    )
    return Message(content=content, reply_to=msg)


def _tune_head_and_evaluate(
    model: MultiTaskModel,
    cfg: ExperimentConfig,
    setup: ClientSetup,
    server: ConfigRecord,
    epochs: int,
) -> dict[str, float]:
    """Fine-tune a copy of the task's head for ``epochs`` (if > 0), then evaluate."""
    data = setup.data
    device = pick_device(cfg.device)
    if epochs > 0:
        # The head may be shared with the cached initial model (frozen scope): tune a copy.
        model.heads[data.task] = copy.deepcopy(model.heads[data.task])
        settings = dataclasses.replace(_settings(server, cfg, data.client_id), epochs=epochs)
        train_local(
            model, data.task, data.x_train, data.y_train, settings, _head_keys(model, data.task),
            device=device, features=client_features(cfg, setup, "train", model),
        )  # fmt: skip
    return evaluate(
        model,
        data.task,
        data.x_test,
        data.y_test,
        device,
        features=client_features(cfg, setup, "test", model),
    )


def handle_evaluate(msg: Message, context: Context, cfg: ExperimentConfig) -> Message:
    """Evaluate the client's personal model (shared + task + local) on its test split.

    Strategy and run keys in the config: ``personal-lambda`` (Ditto) evaluates
    the personal model instead; ``head-finetune-epochs`` (FedBABU, unseen
    clients) first fine-tunes a throw-away copy of the task's head on the
    training split; ``global-view-epochs`` also reports the global view as
    ``global-*`` metrics: the received shared (and task) arrays with the run's
    initial head, fine-tuned for that many epochs, no local state.
    """
    setup = setup_for(context, cfg)
    server = msg.content.config_records.get(CONFIG, ConfigRecord())
    state = state_store(cfg, context).load(context, setup.data.client_id, _server_round(server))
    if PERSONAL_LAMBDA in server:
        model = _personal_model(msg, cfg, state)
    else:
        model = _restore(msg, cfg, state)
    finetune_epochs = int(server.get(HEAD_FINETUNE_EPOCHS, 0))  # type: ignore[arg-type]
    result = _tune_head_and_evaluate(model, cfg, setup, server, finetune_epochs)
    global_epochs = int(server.get(GLOBAL_VIEW_EPOCHS, 0))  # type: ignore[arg-type]
    if global_epochs > 0:
        view = _tune_head_and_evaluate(_restore(msg, cfg, {}), cfg, setup, server, global_epochs)
        result.update({f"global-{k}": v for k, v in view.items() if k != "num-examples"})
    return Message(content=reply_content(_info(setup), result), reply_to=msg)


def handle_query(msg: Message, context: Context, cfg: ExperimentConfig) -> Message:
    """Tell the server which client this is and which task it holds."""
    setup = setup_for(context, cfg)
    return Message(content=RecordDict({CLIENT: _info(setup).to_record()}), reply_to=msg)


def make_client_app(
    config: ExperimentConfig | None = None, mods: list[Mod] | None = None
) -> ClientApp:
    """Build the ClientApp; without ``config`` it reads Flower's ``run_config``.

    ``mods`` are Flower client mods (they see every message in and out).
    """
    app = ClientApp(mods=mods or [])

    def resolve(context: Context) -> ExperimentConfig:
        return config if config is not None else config_from_run_config(context.run_config)

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
