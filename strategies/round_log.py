"""What happened in one round, as typed rows: the server's log before it reaches the run directory.

:class:`~strategies.scoped.ScopedStrategy` fills one :class:`RoundLog` per round;
the ServerApp turns it into a :class:`fedmtl.results.RoundRecord` line of
``metrics.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedmtl.metrics import ClientRow, ReplyIssue


@dataclass
class RoundLog:
    """One round's replies, rejections, failures, bytes and aggregation outcome.

    Attributes
    ----------
    bytes_down, bytes_up : int
        Array bytes sent to clients and received from them.
    train, evaluate : list of ClientRow
        The valid replies' metrics, in client-id order.
    rejected, failures : list of ReplyIssue
        Replies refused by validation, and errors or missing replies.
    skipped : bool
        Whether the round kept the previous weights (no valid reply, or the
        aggregation failed or returned something unusable).
    skip_reason : str or None
        Why the round was skipped.
    strategy_metrics : dict of str to float
        Scalar metrics the inner strategy returned from ``aggregate_train``.
    task_similarity : dict of str to dict of str to float
        ``{task_a: {task_b: cosine}}`` (``task_a < task_b``) of the task groups'
        mean shared-scope updates among the valid train replies
        (:func:`strategies.interference.reply_task_similarity`); empty with
        fewer than two task groups.
    client_task_similarity : dict of str to dict of str to float
        ``{task_a: {task_b: cosine}}`` (``task_a < task_b``): the mean over the
        valid train replies of clients holding both tasks of the cosine between
        the two tasks' gradients on their shared parameters
        (:func:`strategies.interference.client_task_similarity`); empty when no
        client holds two tasks.
    client_task_similarity_clients : dict of str to dict of str to int
        How many clients each pair of ``client_task_similarity`` averages.
    privacy : dict of str to float
        A differentially private run's accounting after this round (``epsilon``,
        ``delta``, ``noise-multiplier``, ``clip``: :mod:`strategies.privacy`); empty otherwise.
    """

    bytes_down: int = 0
    bytes_up: int = 0
    train: list[ClientRow] = field(default_factory=list)
    evaluate: list[ClientRow] = field(default_factory=list)
    rejected: list[ReplyIssue] = field(default_factory=list)
    failures: list[ReplyIssue] = field(default_factory=list)
    skipped: bool = False
    skip_reason: str | None = None
    strategy_metrics: dict[str, float] = field(default_factory=dict)
    task_similarity: dict[str, dict[str, float]] = field(default_factory=dict)
    client_task_similarity: dict[str, dict[str, float]] = field(default_factory=dict)
    client_task_similarity_clients: dict[str, dict[str, int]] = field(default_factory=dict)
    privacy: dict[str, float] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        """Mark the round as skipped (the previous weights are kept) with ``reason``."""
        self.skipped = True
        self.skip_reason = reason
