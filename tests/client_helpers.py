"""Drive the ClientApp's handlers directly: server messages and a node's Context, no Ray."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from fedmtl.config import ExperimentConfig
from fedmtl.models import MultiTaskModel
from fedmtl.models.state import export_arrays
from fedmtl.records import ARRAYS, CONFIG, TASK_ARRAYS, from_record, to_record
from fedmtl.run_model import initial_model, run_scopes
from fedmtl.scopes import keys_in, task_relevant
from fedmtl.training import TrainSettings, client_seed

NDArrays = dict[str, npt.NDArray[Any]]


def global_arrays(cfg: ExperimentConfig, task: str) -> tuple[NDArrays, NDArrays]:
    """The initial model's shared arrays and ``task``'s task-scope arrays."""
    model, scopes = initial_model(cfg), run_scopes(cfg)
    task_keys = [k for k in keys_in(scopes, "task") if k.startswith(f"heads.{task}.")]
    return export_arrays(model, keys_in(scopes, "shared")), export_arrays(model, task_keys)


def instruction(
    message_type: str,
    shared: NDArrays,
    task: NDArrays,
    config: Mapping[str, Any],
    node_id: int = 5,
) -> Message:
    """A train or evaluate message as ScopedStrategy sends it (needs ``server_identity``)."""
    content = RecordDict({ARRAYS: to_record(shared), CONFIG: ConfigRecord(dict(config))})
    if task:
        content[TASK_ARRAYS] = to_record(task)
    return Message(content, dst_node_id=node_id, message_type=message_type)


def trainable_keys(cfg: ExperimentConfig, model: MultiTaskModel, task: str) -> set[str]:
    """The parameters a client of ``task`` trains: not frozen, not another task's head."""
    scopes = run_scopes(cfg)
    return {
        name
        for name, _ in model.named_parameters()
        if scopes[name] != "frozen" and task_relevant(name, task)
    }


def round_settings(cfg: ExperimentConfig, client: int, server_round: int = 1) -> TrainSettings:
    """A client's training settings in a round when the server sends no overrides."""
    return TrainSettings(
        epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        optimizer=cfg.optimizer,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        seed=client_seed(cfg.seed, server_round, client),
    )


def node_context(partition_id: int, node_id: int = 5) -> Context:
    """A simulated node's Context with empty state."""
    return Context(
        run_id=1,
        node_id=node_id,
        node_config={"partition-id": partition_id},
        state=RecordDict(),
        run_config={},
    )


def train_message(shared: NDArrays, task: NDArrays, **config: Any) -> Message:
    """A round-1 train instruction with extra config keys (kebab-case via ``_``)."""
    keys = {"server-round": 1, **{k.replace("_", "-"): v for k, v in config.items()}}
    return instruction(MessageType.TRAIN, shared, task, keys)


def evaluate_message(shared: NDArrays, task: NDArrays, **config: Any) -> Message:
    """A round-1 evaluate instruction with extra config keys (kebab-case via ``_``)."""
    keys = {"server-round": 1, **{k.replace("_", "-"): v for k, v in config.items()}}
    return instruction(MessageType.EVALUATE, shared, task, keys)


def reply_arrays(reply: Message, key: str = ARRAYS) -> NDArrays:
    """An ArrayRecord of a reply as numpy."""
    return from_record(reply.content.array_records[key])


def distance(a: Mapping[str, npt.NDArray[Any]], b: Mapping[str, npt.NDArray[Any]]) -> float:
    """Euclidean distance over the floating entries ``a`` and ``b`` share."""
    keys = [k for k in a if k in b and np.issubdtype(np.asarray(a[k]).dtype, np.floating)]
    return float(np.sqrt(sum(float(np.sum((a[k] - b[k]) ** 2)) for k in keys)))
