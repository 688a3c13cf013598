"""A Flower Grid whose nodes are the ClientApp's handlers, called in this process.

It runs a whole federation (``run_server``) without Ray or network: the
reference a real deployment is compared with, message for message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from flwr.app import Context, Message, MessageType, RecordDict

from fedmtl.client_app import handle_evaluate, handle_query, handle_train
from fedmtl.config import ExperimentConfig

Handler = Callable[[Message, Context, ExperimentConfig], Message]
HANDLERS: dict[str, Handler] = {
    MessageType.TRAIN: handle_train,
    MessageType.EVALUATE: handle_evaluate,
    MessageType.QUERY: handle_query,
}


def device_context(node_id: int, node_config: Mapping[str, object]) -> Context:
    """A deployed node's Context: its node config, empty state."""
    return Context(
        run_id=1,
        node_id=node_id,
        node_config=dict(node_config),  # type: ignore[arg-type]
        state=RecordDict(),
        run_config={},
    )


class InProcessGrid:
    """Deliver every message to its node's handler; reply in the order sent."""

    def __init__(self, contexts: Mapping[int, Context], cfg: ExperimentConfig) -> None:
        self.contexts = dict(contexts)
        self.cfg = cfg

    def get_node_ids(self) -> list[int]:
        """Every node is always connected."""
        return sorted(self.contexts)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        """Call the node's handler for each message."""
        replies = []
        for message in messages:
            context = self.contexts[message.metadata.dst_node_id]
            handler = HANDLERS[message.metadata.message_type]
            replies.append(handler(message, context, self.cfg))
        return replies
