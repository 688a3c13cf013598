"""Sort one round's replies into valid ones, rejections and failures (the round log).

Errors (a crashed client, a node the SuperLink could not reach) become
failures, replies that fail :func:`strategies.replies.check_reply` become
rejections; both are logged and listed in client-id order. The valid replies
come back in client-id order too, so float sums do not depend on the order in
which replies arrived.

Each valid reply adds one :class:`~fedmtl.metrics.ClientRow` per task its
client holds: a one-task client's row holds its metrics as they are, a client
holding several tasks gets one row per task with that task's own numbers
(:func:`fedmtl.records.unpack_task_metrics`; its gradient cosines are no row).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from flwr.app import Message

from fedmtl.metrics import ClientRow, ReplyIssue
from fedmtl.records import ClientInfo, metric_values, record_nbytes, unpack_task_metrics
from strategies.nodes import NodeDirectory
from strategies.replies import Expected, check_reply
from strategies.round_log import RoundLog

logger = logging.getLogger(__name__)
ValidReply = tuple[Message, ClientInfo]


def screen_replies(
    replies: Iterable[Message],
    expected: Expected,
    *,
    train: bool,
    log: RoundLog,
    nodes: NodeDirectory,
    sent: Sequence[Message] = (),
    server_round: int = 0,
) -> list[ValidReply]:
    """Log failures and rejections into ``log``; return the valid replies by client id.

    ``sent`` (the instructions, numbered by the Grid when it sent them) names the
    node of an error the SuperLink answered in its own name. Valid replies teach
    ``nodes`` who replied, and add a row to ``log``'s train or evaluate rows.
    """
    first_rejected, first_failure = len(log.rejected), len(log.failures)
    destinations = {
        m.metadata.message_id: m.metadata.dst_node_id
        for m in sent
        if m.metadata.message_id  # set by the Grid when it sent the message
    }
    valid = []
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            # The SuperLink answers for an unreachable node in its own name.
            node = destinations.get(reply.metadata.reply_to_message_id, node)
            client = nodes.client_of(node)
            log.failures.append(ReplyIssue(node, client, str(reply.error.reason)))
            logger.warning(
                "round %d: client %s (node %s) failed: %s",
                server_round,
                client,
                node,
                reply.error.reason,
            )
            continue
        if train:
            log.bytes_up += sum(record_nbytes(r) for r in reply.content.array_records.values())
        info, reason = check_reply(reply.content, expected, train)
        if reason is not None or info is None:
            client = info.client_id if info else nodes.client_of(node)
            log.rejected.append(ReplyIssue(node, client, reason or "invalid reply"))
            logger.warning(
                "round %d: rejected reply of client %s: %s", server_round, client, reason
            )
            continue
        nodes.learn(node, info)
        valid.append((reply, info))
    valid.sort(key=lambda pair: pair[1].client_id)  # order-independent float sums
    # Replies arrive in any order; the log lists them by client, reproducibly.
    log.rejected[first_rejected:] = sorted(log.rejected[first_rejected:], key=ReplyIssue.sort_key)
    log.failures[first_failure:] = sorted(log.failures[first_failure:], key=ReplyIssue.sort_key)
    rows = log.train if train else log.evaluate
    rows.extend(row for r, info in valid for row in client_rows(r, info))
    return valid


def client_rows(reply: Message, info: ClientInfo) -> list[ClientRow]:
    """The rows of one valid reply: one per task its client holds (see the module docstring)."""
    metrics = metric_values(reply.content)
    if len(info.tasks) == 1:
        return [ClientRow(info.client_id, info.task, metrics)]
    by_task = unpack_task_metrics(metrics, info.tasks)
    return [ClientRow(info.client_id, task, by_task[task]) for task in info.tasks]
