"""A Flower Grid whose nodes are the ClientApp's handlers, called in this process.

It runs a whole federation (``run_server``) without Ray or network: the
reference a real deployment is compared with, message for message, and a fast
way to run every registered strategy end to end. Client mods wrap the handlers
as Flower's do; a handler that raises gives an error reply, as Flower's
runtimes do.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence

from flwr.app import Context, Error, Message, MessageType, RecordDict
from flwr.common.constant import ErrorCode

from fedmtl.assembly import resolved
from fedmtl.client_app import handle_evaluate, handle_query, handle_train
from fedmtl.config import ExperimentConfig

Handler = Callable[[Message, Context, ExperimentConfig], Message]
Mod = Callable[[Message, Context, Callable[[Message, Context], Message]], Message]
HANDLERS: dict[str, Handler] = {
    MessageType.TRAIN: handle_train,
    MessageType.EVALUATE: handle_evaluate,
    MessageType.QUERY: handle_query,
}


def device_context(node_id: int, node_config: Mapping[str, object]) -> Context:
    """A node's Context: its node config, empty state."""
    return Context(
        run_id=1,
        node_id=node_id,
        node_config=dict(node_config),  # type: ignore[arg-type]
        state=RecordDict(),
        run_config={},
    )


class InProcessGrid:
    """Deliver every message to its node's handler; reply in the order sent."""

    def __init__(
        self,
        contexts: Mapping[int, Context],
        cfg: ExperimentConfig,
        mods: Sequence[Mod] = (),
    ) -> None:
        self.contexts = dict(contexts)
        self.cfg = resolved(cfg)  # as the ClientApp does
        self.mods = list(mods)

    def get_node_ids(self) -> list[int]:
        """Every node is always connected."""
        return sorted(self.contexts)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        """Call the node's handler (through the mods) for each message."""
        return [self._deliver(message) for message in messages]

    def _deliver(self, message: Message) -> Message:
        handler = HANDLERS[message.metadata.message_type]

        def call(msg: Message, context: Context) -> Message:
            return handler(msg, context, self.cfg)

        for mod in reversed(self.mods):
            call = functools.partial(mod, call_next=call)
        try:
            return call(message, self.contexts[message.metadata.dst_node_id])
        except Exception as exc:  # as Flower's runtimes: the node's reply is an error
            error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=repr(exc))
            return Message(error, reply_to=message)
