"""The wire format: the one module that knows how messages are laid out.

Server to client (train and evaluate)::

    "arrays"       ArrayRecord   shared scope (the only record stock strategies see)
    "task-arrays"  ArrayRecord   task scope of the receiving client's task (if any)
    "config"       ConfigRecord  server-round, local-epochs, learning-rate, ...

Client to server::

    "arrays"       ArrayRecord   shared scope after local training (train only)
    "task-arrays"  ArrayRecord   task scope after local training (train only, if any)
    "metrics"      MetricRecord  num-examples, loss, the task's metrics
    "client"       ConfigRecord  task name and client id (MetricRecord holds numbers only)

Local-scope weights never appear in any message. This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

ARRAYS = "arrays"
TASK_ARRAYS = "task-arrays"
CONFIG = "config"
METRICS = "metrics"
CLIENT = "client"
NUM_EXAMPLES = "num-examples"
QUERY_KEY = "fedmtl-query"
# Training keys a strategy may put in the server's "config" record (see fedmtl.training).
HEAD_EPOCHS = "head-epochs"  # FedRep: epochs on the head (body frozen) before the body epochs
# FedBABU (evaluate config): fine-tune a copy of the head this many epochs, then evaluate.
HEAD_FINETUNE_EPOCHS = "head-finetune-epochs"
# Ditto (train and evaluate config): lambda of the personal model's proximal term.
PERSONAL_LAMBDA = "personal-lambda"
# Evaluate config: also report the global view (received arrays + a fresh head tuned this long).
GLOBAL_VIEW_EPOCHS = "global-view-epochs"
# Server config: the round of the last durable checkpoint (clients keep the state it needs).
CHECKPOINT_ROUND = "checkpoint-round"

NDArrays = dict[str, npt.NDArray[np.generic]]


def with_entries(config: ConfigRecord, entries: Mapping[str, int | float | str]) -> ConfigRecord:
    """A copy of ``config`` with ``entries`` added (a strategy's keys for its clients)."""
    return ConfigRecord({**dict(config.items()), **entries})


def to_record(arrays: Mapping[str, npt.NDArray[np.generic]]) -> ArrayRecord:
    """Encode named numpy arrays (keys kept, order kept)."""
    return ArrayRecord({key: Array(np.asarray(value, order="C")) for key, value in arrays.items()})


def from_record(record: ArrayRecord) -> NDArrays:
    """Decode an ArrayRecord into named numpy arrays."""
    return {key: array.numpy() for key, array in record.items()}


def record_nbytes(record: ArrayRecord | None) -> int:
    """Serialized size of an ArrayRecord's arrays in bytes (what travels)."""
    if record is None:
        return 0
    return sum(len(array.data) for array in record.values())


@dataclass(frozen=True)
class ClientInfo:
    """Who replied: the client's id (partition id or node id) and its task."""

    client_id: int
    task: str

    def to_record(self) -> ConfigRecord:
        """Encode for the ``"client"`` entry of a reply."""
        return ConfigRecord({"client-id": self.client_id, "task": self.task})

    @classmethod
    def from_content(cls, content: RecordDict) -> ClientInfo:
        """Read the ``"client"`` entry of a reply (raises ``KeyError`` if absent)."""
        record = content.config_records[CLIENT]
        return cls(client_id=int(record["client-id"]), task=str(record["task"]))  # type: ignore[arg-type]


def reply_content(
    info: ClientInfo,
    metrics: Mapping[str, float | int],
    shared: ArrayRecord | None = None,
    task: ArrayRecord | None = None,
) -> RecordDict:
    """Build a client's reply; shared and task arrays only for train replies."""
    content = RecordDict({METRICS: MetricRecord(dict(metrics)), CLIENT: info.to_record()})
    if shared is not None:
        content[ARRAYS] = shared
    if task is not None:
        content[TASK_ARRAYS] = task
    return content


def instruction_content(
    shared: ArrayRecord, config: ConfigRecord, task: ArrayRecord | None = None
) -> RecordDict:
    """Build a server-to-client message body."""
    content = RecordDict({ARRAYS: shared, CONFIG: config})
    if task is not None:
        content[TASK_ARRAYS] = task
    return content


def metric_values(content: RecordDict) -> dict[str, float]:
    """The reply's scalar metrics as floats (lists are dropped)."""
    record = content.metric_records.get(METRICS, MetricRecord())
    return {k: float(v) for k, v in record.items() if isinstance(v, int | float)}
