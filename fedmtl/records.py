"""The wire format: the one module that knows how messages are laid out.

Server to client (train and evaluate)::

    "arrays"       ArrayRecord   shared scope (the only record stock strategies see)
    "task-arrays"  ArrayRecord   task scope of the receiving client's tasks (if any)
    "config"       ConfigRecord  server-round, local-epochs, learning-rate, ... (Instruction)

Client to server::

    "arrays"       ArrayRecord   shared scope after local training (train only)
    "task-arrays"  ArrayRecord   task scope of each task held, after local training (train only)
    "metrics"      MetricRecord  num-examples, loss, the task's metrics; a client holding
                                 several tasks adds "<task>/<name>" per task (pack_task_metrics)
                                 and, in train replies, "grad-cosine/<a>/<b>"
    "client"       ConfigRecord  client id, task, and "tasks" when it holds several
                                 (MetricRecord holds numbers only)

Local-scope weights never appear in any message. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.app.typing import ConfigRecordValues

Scalar = TypeVar("Scalar", int, float, str, bool)

ARRAYS = "arrays"
TASK_ARRAYS = "task-arrays"
CONFIG = "config"
METRICS = "metrics"
CLIENT = "client"
NUM_EXAMPLES = "num-examples"
QUERY_KEY = "fedmtl-query"
#: Train metrics of a DP-SGD client (fedmtl.private_training): its ε so far over every round it
#: trained in, and the δ that ε is for.
DP_SGD_EPSILON = "dp-sgd-epsilon"
DP_SGD_DELTA = "dp-sgd-delta"

# Keys of the server's "config" record (train and evaluate); :class:`Instruction` decodes them.
SERVER_ROUND = "server-round"  # set by every Flower strategy's configure_train/evaluate
LOCAL_EPOCHS = "local-epochs"  # absent: the experiment's local-epochs
BATCH_SIZE = "batch-size"  # absent: the experiment's batch-size
LEARNING_RATE = "learning-rate"  # absent: the experiment's learning-rate
PROXIMAL_MU = "proximal-mu"  # FedProx (Flower's): weight of the proximal term, 0 = none
# The client routine that does the local work (fedmtl.routines); absent: "default".
ROUTINE = "client-routine"
DEFAULT_ROUTINE = "default"
HEAD_EPOCHS = "head-epochs"  # FedRep: epochs on the head (body frozen) before the body epochs
# FedBABU and unseen clients (evaluate): fine-tune a copy of the head this long, then evaluate.
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
    """Who replied: the client's id (partition id or node id) and the tasks it holds.

    ``task`` is its first (for most clients its only) task; a client holding
    several tasks lists the others in ``extra_tasks`` (:attr:`tasks` has all).
    """

    client_id: int
    task: str
    extra_tasks: tuple[str, ...] = ()

    @classmethod
    def holding(cls, client_id: int, tasks: Sequence[str]) -> ClientInfo:
        """The identity of a client holding ``tasks`` (at least one, in order, distinct)."""
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"a client holds one or more distinct tasks, got {list(tasks)}")
        return cls(client_id=client_id, task=tasks[0], extra_tasks=tuple(tasks[1:]))

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task the client holds, the first one first."""
        return (self.task, *self.extra_tasks)

    def to_record(self) -> ConfigRecord:
        """Encode for the ``"client"`` entry of a reply (``"tasks"`` only for several)."""
        record = ConfigRecord({"client-id": self.client_id, "task": self.task})
        if self.extra_tasks:
            record["tasks"] = list(self.tasks)
        return record

    @classmethod
    def from_content(cls, content: RecordDict) -> ClientInfo:
        """Read the ``"client"`` entry of a reply (raises ``KeyError`` if absent).

        Raises ``ValueError`` when ``"tasks"`` is not a list of distinct names
        starting with ``"task"``.
        """
        record = content.config_records[CLIENT]
        client_id = config_value(record, "client-id", int)
        task = config_value(record, "task", str)
        if "tasks" not in record:
            return cls(client_id=client_id, task=task)
        tasks = record["tasks"]
        if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
            raise ValueError("'client' entry 'tasks' must be a list of task names")
        if not tasks or tasks[0] != task:
            raise ValueError(f"'client' entry 'tasks' {tasks} must start with task '{task}'")
        return cls.holding(client_id, [str(t) for t in tasks])


# Metrics of a client holding several tasks: "<task>/<name>" for each task's own
# numbers, beside the totals "num-examples" (summed) and "loss" (example-weighted).
TASK_METRIC_SEPARATOR = "/"
#: Train metrics: "grad-cosine/<a>/<b>", the mean cosine between tasks a and b's gradients.
GRADIENT_COSINE = "grad-cosine"


def task_metric(task: str, name: str) -> str:
    """The metric key of ``task``'s own ``name`` in a several-task client's reply."""
    return f"{task}{TASK_METRIC_SEPARATOR}{name}"


def cosine_metric(first: str, second: str) -> str:
    """The train-metric key of the gradient cosine between two tasks (order-free)."""
    a, b = sorted((first, second))
    return TASK_METRIC_SEPARATOR.join((GRADIENT_COSINE, a, b))


def pack_task_metrics(by_task: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """One reply's metrics from each task's: as they are for one task, else namespaced.

    With several tasks: ``num-examples`` (their sum), ``loss`` (their
    example-weighted mean) and every task's numbers as ``"<task>/<name>"``.
    """
    if len(by_task) == 1:
        return dict(next(iter(by_task.values())))
    counts = {t: float(m.get(NUM_EXAMPLES, 0.0)) for t, m in by_task.items()}
    total = sum(counts.values())
    packed: dict[str, float] = {NUM_EXAMPLES: total}
    if all("loss" in m for m in by_task.values()):
        weighted = sum(float(m["loss"]) * counts[t] for t, m in by_task.items())
        packed["loss"] = weighted / total if total > 0 else 0.0
    for task, metrics in by_task.items():
        packed.update({task_metric(task, k): float(v) for k, v in metrics.items()})
    return packed


def unpack_task_metrics(
    metrics: Mapping[str, float], tasks: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Each task's own metrics of a reply (the inverse of :func:`pack_task_metrics`).

    A one-task reply's metrics all belong to its task (gradient cosines left
    out); a several-task reply's ``"<task>/<name>"`` keys are split by task.
    """
    if len(tasks) == 1:
        return {tasks[0]: {k: v for k, v in metrics.items() if TASK_METRIC_SEPARATOR not in k}}
    out: dict[str, dict[str, float]] = {task: {} for task in tasks}
    for key, value in metrics.items():
        task, sep, name = key.partition(TASK_METRIC_SEPARATOR)
        if sep and task in out:
            out[task][name] = value
    return out


def prefixed_metrics(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    """``metrics`` renamed ``<prefix><name>`` (``<task>/<prefix><name>`` per task), counts left out.

    How a second view of the same client is reported beside the first (the
    global view's ``global-accuracy``).
    """
    out = {}
    for key, value in metrics.items():
        task, sep, name = key.rpartition(TASK_METRIC_SEPARATOR)
        if name != NUM_EXAMPLES and not task.startswith(GRADIENT_COSINE):
            out[f"{task}{sep}{prefix}{name}"] = value
    return out


def gradient_cosines(metrics: Mapping[str, float]) -> dict[tuple[str, str], float]:
    """The ``grad-cosine/<a>/<b>`` train metrics of a reply, keyed ``(a, b)``."""
    out = {}
    for key, value in metrics.items():
        parts = key.split(TASK_METRIC_SEPARATOR)
        if len(parts) == 3 and parts[0] == GRADIENT_COSINE:
            out[(parts[1], parts[2])] = value
    return out


def task_examples(content: RecordDict, task: str) -> float:
    """``task``'s own ``num-examples`` in a reply (a one-task reply's total)."""
    metrics = metric_values(content)
    return metrics.get(task_metric(task, NUM_EXAMPLES), reply_examples(content))


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


def reply_examples(content: RecordDict) -> float:
    """The reply's ``num-examples`` as a float (``KeyError`` if absent, ``TypeError`` if a list).

    Replies are validated before aggregation, so strategies read it through this
    one typed accessor instead of indexing the MetricRecord.
    """
    value = content.metric_records[METRICS][NUM_EXAMPLES]
    if isinstance(value, list):
        raise TypeError(f"'{NUM_EXAMPLES}' must be a number, got a list")
    return float(value)


def metric_values(content: RecordDict) -> dict[str, float]:
    """The reply's scalar metrics as floats (lists are dropped)."""
    record = content.metric_records.get(METRICS, MetricRecord())
    return {k: float(v) for k, v in record.items() if isinstance(v, int | float)}


class InstructionError(ValueError):
    """A key of a config record holds a value of the wrong type or out of range."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config key '{key}' {problem}")
        self.key = key


def _typed(key: str, value: object, kind: type[Scalar]) -> Scalar:
    """``value`` as ``kind``: an int is a float too, a bool is never a number; floats finite."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise InstructionError(key, f"must be {kind.__name__}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InstructionError(key, f"must be finite, got {value!r}")
    return value


def config_value(record: ConfigRecord, key: str, kind: type[Scalar]) -> Scalar:
    """``record[key]`` checked to be ``kind`` (``KeyError`` if absent, else InstructionError)."""
    return _typed(key, record[key], kind)


def _key(wire: str, kind: type, default: object, low: float = 0, above: bool = False) -> Any:
    """A field of :class:`Instruction`: its wire key, type and lowest allowed value."""
    return field(default=default, metadata={"key": wire, "kind": kind, "low": low, "above": above})


@dataclass(frozen=True)
class Instruction:
    """What a train or evaluate message's ``"config"`` record asks, decoded and checked once.

    Every known key has a typed field; ``None`` (or the field's default) means the
    server did not send it, and the client falls back to the experiment's value.
    Keys fedmtl does not know stay in ``extras`` for plug-in routines, read with
    :meth:`extra_int`, :meth:`extra_float`, :meth:`extra_str` and :meth:`extra_bool`.
    :meth:`decode` raises :class:`InstructionError` naming the key on a value of the
    wrong type, a non-finite float or a value out of range; :meth:`encode` writes the
    fields that differ from their defaults, so ``decode(encode(i)) == i``.
    """

    server_round: int = _key(SERVER_ROUND, int, 0)
    local_epochs: int | None = _key(LOCAL_EPOCHS, int, None)
    batch_size: int | None = _key(BATCH_SIZE, int, None, low=1)
    learning_rate: float | None = _key(LEARNING_RATE, float, None, above=True)
    proximal_mu: float = _key(PROXIMAL_MU, float, 0.0)
    routine: str = _key(ROUTINE, str, DEFAULT_ROUTINE)
    head_epochs: int = _key(HEAD_EPOCHS, int, 0)
    head_finetune_epochs: int = _key(HEAD_FINETUNE_EPOCHS, int, 0)
    personal_lambda: float | None = _key(PERSONAL_LAMBDA, float, None)
    global_view_epochs: int = _key(GLOBAL_VIEW_EPOCHS, int, 0)
    checkpoint_round: int | None = _key(CHECKPOINT_ROUND, int, None)
    extras: Mapping[str, ConfigRecordValues] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in _known_fields():
            value = getattr(self, f.name)
            if value is not None and value != f.default:
                value = _typed(f.metadata["key"], value, f.metadata["kind"])
                _check_range(f, value)
                object.__setattr__(self, f.name, value)  # an int given for a float field
        clash = sorted(set(self.extras) & set(KNOWN_KEYS))
        if clash:
            raise InstructionError(clash[0], "is a known key: set its field, not an extra")

    @classmethod
    def decode(cls, record: ConfigRecord) -> Instruction:
        """The instruction a config record holds (known keys typed, the rest in ``extras``)."""
        known = {f.metadata["key"]: f for f in _known_fields()}
        values = {
            known[key].name: _typed(key, value, known[key].metadata["kind"])
            for key, value in record.items()
            if key in known
        }
        extras = {key: value for key, value in record.items() if key not in known}
        return cls(**values, extras=extras)

    @classmethod
    def from_content(cls, content: RecordDict) -> Instruction:
        """The instruction of a server message (its ``"config"`` record; none: all defaults)."""
        return cls.decode(content.config_records.get(CONFIG, ConfigRecord()))

    def encode(self) -> ConfigRecord:
        """The config record of this instruction: fields that differ from their defaults."""
        entries: dict[str, ConfigRecordValues] = {
            f.metadata["key"]: getattr(self, f.name)
            for f in _known_fields()
            if getattr(self, f.name) != f.default
        }
        return ConfigRecord({**entries, **self.extras})

    def sent_keys(self) -> frozenset[str]:
        """The known keys whose value differs from the default (what :meth:`encode` writes)."""
        return frozenset(
            f.metadata["key"] for f in _known_fields() if getattr(self, f.name) != f.default
        )

    def extra_int(self, key: str, default: int) -> int:
        """The plug-in key ``key`` as an int (``default`` when absent)."""
        return self._extra(key, default, int)

    def extra_float(self, key: str, default: float) -> float:
        """The plug-in key ``key`` as a finite float (``default`` when absent)."""
        return self._extra(key, default, float)

    def extra_str(self, key: str, default: str) -> str:
        """The plug-in key ``key`` as a string (``default`` when absent)."""
        return self._extra(key, default, str)

    def extra_bool(self, key: str, default: bool) -> bool:
        """The plug-in key ``key`` as a bool (``default`` when absent)."""
        return self._extra(key, default, bool)

    def _extra(self, key: str, default: Scalar, kind: type[Scalar]) -> Scalar:
        return default if key not in self.extras else _typed(key, self.extras[key], kind)


def _known_fields() -> tuple[dataclasses.Field[Any], ...]:
    return tuple(f for f in dataclasses.fields(Instruction) if "key" in f.metadata)


def _check_range(f: dataclasses.Field[Any], value: float | str) -> None:
    low, above = f.metadata["low"], f.metadata["above"]
    if isinstance(value, str):
        if not value:
            raise InstructionError(f.metadata["key"], "must not be empty")
    elif value < low or (above and value == low):
        bound = f"> {low}" if above else f">= {low}"
        raise InstructionError(f.metadata["key"], f"must be {bound}, got {value!r}")


KNOWN_KEYS: tuple[str, ...] = tuple(f.metadata["key"] for f in _known_fields())
