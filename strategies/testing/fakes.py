"""Fake Flower messages and a fake Grid: drive a strategy without Ray or a SuperLink.

Replies are laid out exactly as fedmtl's ClientApp lays them out (see
:mod:`fedmtl.records`). Building a ``Message`` outside a run needs Flower's
process-wide ``TaskIdentity``; :func:`server_identity` sets it for a block.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
from flwr.app import ConfigRecord, Error, Message, MessageType, Metadata, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedmtl.records import (
    CLIENT,
    CONFIG,
    NUM_EXAMPLES,
    QUERY_KEY,
    ClientInfo,
    cosine_metric,
    pack_task_metrics,
    reply_content,
    to_record,
)

SERVER_NODE = 0
CLIENT_ID_OFFSET = 100  # FakeGrid answers queries with client id = node id + 100


@contextmanager
def server_identity(run_id: int = 1, task_id: int = 1) -> Iterator[None]:
    """Pretend to run inside a ServerApp for the duration of the block.

    Flower 1.41 reads the run id, node id and task id of new instruction
    messages from ``TaskIdentity``; the runtimes set it, tests must too. The
    previous values are restored on exit.
    """
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = (
        run_id,
        SERVER_NODE,
        task_id,
    )
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def reply_metadata(node_id: int, message_type: str) -> Metadata:
    """Metadata of a reply sent by ``node_id`` to the server."""
    return Metadata(
        run_id=1,
        message_id=f"reply-{node_id}",
        src_node_id=node_id,
        dst_node_id=SERVER_NODE,
        reply_to_message_id=f"instruction-{node_id}",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )


def reply(node_id: int, content: RecordDict, message_type: str = MessageType.TRAIN) -> Message:
    """A successful reply from ``node_id``."""
    metadata = reply_metadata(node_id, message_type)
    return Message(content=content, metadata=metadata)  # type: ignore[call-overload,no-any-return]


def error_reply(node_id: int, reason: str, message_type: str = MessageType.TRAIN) -> Message:
    """A reply from ``node_id`` that carries an error instead of content."""
    metadata = reply_metadata(node_id, message_type)
    return Message(error=Error(code=1, reason=reason), metadata=metadata)  # type: ignore[call-overload,no-any-return]


def train_reply(
    node_id: int,
    task: str,
    num_examples: float | None,
    shared: Mapping[str, npt.NDArray[np.generic]],
    task_arrays: Mapping[str, npt.NDArray[np.generic]] | None = None,
    loss: float = 0.5,
    client_id: int | None = None,
) -> Message:
    """A train reply laid out as the ClientApp lays it out.

    Parameters
    ----------
    node_id : int
        The replying node.
    task : str
        The client's task (``"client"`` ConfigRecord).
    num_examples : float or None
        ``num-examples`` metric; ``None`` leaves it out.
    shared, task_arrays : mapping of str to ndarray
        The shared scope (``"arrays"``) and, if given, the task scope (``"task-arrays"``).
    loss : float
        ``loss`` metric.
    client_id : int, optional
        Defaults to ``node_id``.
    """
    metrics: dict[str, float] = {"loss": loss}
    if num_examples is not None:
        metrics["num-examples"] = num_examples
    content = reply_content(
        ClientInfo(client_id=node_id if client_id is None else client_id, task=task),
        metrics,
        shared=to_record(shared),
        task=to_record(task_arrays) if task_arrays is not None else None,
    )
    return reply(node_id, content, MessageType.TRAIN)


def multitask_train_reply(
    node_id: int,
    examples: Mapping[str, float],
    shared: Mapping[str, npt.NDArray[np.generic]],
    task_arrays: Mapping[str, npt.NDArray[np.generic]] | None = None,
    losses: Mapping[str, float] | None = None,
    client_id: int | None = None,
    cosines: Mapping[tuple[str, str], float] | None = None,
) -> Message:
    """A train reply of a client holding the tasks of ``examples`` (in that order).

    Parameters
    ----------
    node_id : int
        The replying node.
    examples : mapping of str to float
        Each task's own ``num-examples``; the metrics are packed as the ClientApp
        packs them (:func:`fedmtl.records.pack_task_metrics`).
    shared, task_arrays : mapping of str to ndarray
        The shared scope and, if given, the merged task scope of every task held.
    losses : mapping of str to float, optional
        Each task's ``loss`` (default 0.5).
    client_id : int, optional
        Defaults to ``node_id``.
    cosines : mapping of (str, str) to float, optional
        Gradient cosines of task pairs (``grad-cosine/<a>/<b>`` metrics).
    """
    by_task = {
        task: {NUM_EXAMPLES: float(n), "loss": (losses or {}).get(task, 0.5)}
        for task, n in examples.items()
    }
    metrics = pack_task_metrics(by_task)
    metrics.update({cosine_metric(a, b): value for (a, b), value in (cosines or {}).items()})
    content = reply_content(
        ClientInfo.holding(node_id if client_id is None else client_id, list(examples)),
        metrics,
        shared=to_record(shared),
        task=to_record(task_arrays) if task_arrays is not None else None,
    )
    return reply(node_id, content, MessageType.TRAIN)


def evaluate_reply(
    node_id: int, task: str, num_examples: int, loss: float, accuracy: float
) -> Message:
    """An evaluate reply (metrics only)."""
    content = reply_content(
        ClientInfo(client_id=node_id, task=task),
        {"num-examples": num_examples, "loss": loss, "accuracy": accuracy},
    )
    return reply(node_id, content, MessageType.EVALUATE)


def query_reply_content(client_id: int, task: str) -> RecordDict:
    """The body of a QUERY reply."""
    return RecordDict({CLIENT: ConfigRecord({"client-id": client_id, "task": task})})


class FakeGrid:
    """Just enough of ``flwr.serverapp.Grid`` for strategies' configure_* calls.

    Parameters
    ----------
    node_tasks : mapping of int to str or sequence of str
        Node id to the task (or the tasks, for a client holding several) the
        node answers QUERY messages with (client id is node id + 100).
    silent : iterable of int
        Nodes that answer queries with an error.
    client_ids : mapping of int to int, optional
        Node id to the client id it reports (default: node id + 100).

    Attributes
    ----------
    node_tasks : dict of int to str
        Node id to its (first) task.
    node_held : dict of int to tuple of str
        Node id to every task it holds.
    """

    def __init__(
        self,
        node_tasks: Mapping[int, str | Sequence[str]],
        silent: Iterable[int] = (),
        client_ids: Mapping[int, int] | None = None,
    ) -> None:
        self.node_held = {
            node: (tasks,) if isinstance(tasks, str) else tuple(tasks)
            for node, tasks in node_tasks.items()
        }
        self.node_tasks = {node: tasks[0] for node, tasks in self.node_held.items()}
        self.silent = set(silent)
        self.client_ids = dict(client_ids or {})
        self.queries: list[Message] = []

    def get_node_ids(self) -> list[int]:
        """Connected nodes, sorted."""
        return sorted(self.node_tasks)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        """Answer fedmtl's client-info QUERY messages (the only ones strategies send)."""
        replies = []
        for message in messages:
            assert message.metadata.message_type == MessageType.QUERY
            assert message.content.config_records[CONFIG][QUERY_KEY] == "client-info"
            self.queries.append(message)
            node = message.metadata.dst_node_id
            if node in self.silent:
                replies.append(error_reply(node, "offline", MessageType.QUERY))
                continue
            client = self.client_ids.get(node, CLIENT_ID_OFFSET + node)
            info = ClientInfo.holding(client, self.node_held[node])
            content = RecordDict({CLIENT: info.to_record()})
            replies.append(reply(node, content, MessageType.QUERY))
        return replies
