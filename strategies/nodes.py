"""Which nodes a strategy may sample, in which order, and when to stop waiting for them.

Flower's node ids are random per connection; the client id a node reports
(asked once with a QUERY message) is stable across runs and restarts. So:

* :class:`NodeDirectory` remembers each node's client and the tasks it holds,
  and lists nodes in client-id order (held-out clients left out);
* :class:`NodeWait` ends the wait for the inner strategy's
  ``min_available_nodes`` after a deadline (Flower's sampling waits forever);
* :func:`sample_key` makes a round's sample a function of (seed, phase, round);
* :class:`ClientOrderedGrid` puts the three together where Flower samples:
  its ``get_node_ids``, which Flower calls right before ``random.sample``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedmtl.records import CONFIG, QUERY_KEY, ClientInfo

logger = logging.getLogger(__name__)
_UNKNOWN_LAST = 1 << 62  # sort key of a node that never said its client id


class NotEnoughNodesError(RuntimeError):
    """Too few nodes stayed connected for longer than the wait deadline."""


class NodeDirectory:
    """Each node's client id and tasks, asked once per node.

    Parameters
    ----------
    query_timeout : float
        Seconds to wait when asking new nodes which client and task they hold.

    Attributes
    ----------
    tasks : dict of int to str
        Node id to the first (for most clients the only) task it holds.
    held : dict of int to tuple of str
        Node id to every task it holds, the first one first.
    clients : dict of int to int
        Node id to the client id it reported.
    """

    def __init__(self, query_timeout: float = 120.0) -> None:
        self.query_timeout = query_timeout
        self.tasks: dict[int, str] = {}
        self.held: dict[int, tuple[str, ...]] = {}
        self.clients: dict[int, int] = {}

    def client_of(self, node_id: int) -> int | None:
        """The client id ``node_id`` reported, if it did."""
        return self.clients.get(node_id)

    def task_of(self, node_id: int) -> str | None:
        """The (first) task ``node_id`` holds, if it said."""
        return self.tasks.get(node_id)

    def tasks_of(self, node_id: int) -> tuple[str, ...]:
        """Every task ``node_id`` holds, the first one first (``()`` if it never said)."""
        return self.held.get(node_id, ())

    def learn(self, node_id: int, info: ClientInfo) -> None:
        """Remember who ``node_id`` is (from a query or a valid reply)."""
        self.tasks[node_id] = info.task
        self.held[node_id] = info.tasks
        self.clients[node_id] = info.client_id

    def forget(self) -> None:
        """Drop every node (a restarted federation: node ids are per connection)."""
        self.tasks, self.held, self.clients = {}, {}, {}

    def state(self) -> dict[str, Any]:
        """What :meth:`restore` needs (plain dicts, ready to pickle)."""
        return {"node-tasks": self.tasks, "node-held": self.held, "node-clients": self.clients}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load a :meth:`state`; one saved before ``node-held`` existed holds one task a node."""
        self.tasks, self.clients = dict(state["node-tasks"]), dict(state["node-clients"])
        held = state.get("node-held")
        self.held = {n: (t,) for n, t in self.tasks.items()} if held is None else dict(held)

    def discover(self, node_ids: Iterable[int], grid: Grid) -> None:
        """Ask the nodes not heard from yet which client and task they hold."""
        unknown = [n for n in node_ids if n not in self.tasks]
        if not unknown:
            return
        query = [
            Message(
                RecordDict({CONFIG: ConfigRecord({QUERY_KEY: "client-info"})}),
                dst_node_id=node,
                message_type=MessageType.QUERY,
            )
            for node in unknown
        ]
        for reply in grid.send_and_receive(query, timeout=self.query_timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                logger.warning("node %s did not say its task: %s", node, reply.error.reason)
                continue
            try:
                self.learn(node, ClientInfo.from_content(reply.content))
            except (KeyError, TypeError, ValueError):
                continue

    def in_client_order(
        self, node_ids: Iterable[int], grid: Grid, excluded: frozenset[int] = frozenset()
    ) -> list[int]:
        """``node_ids`` sorted by client id (unknown ones last), ``excluded`` clients dropped."""
        node_ids = list(node_ids)
        self.discover(node_ids, grid)
        kept = [n for n in node_ids if self.clients.get(n) not in excluded]
        return sorted(kept, key=lambda n: (self.clients.get(n, _UNKNOWN_LAST), n))

    def nodes_of(self, client_ids: Iterable[int]) -> list[int]:
        """The known nodes serving ``client_ids``, by node id."""
        wanted = set(client_ids)
        return sorted(n for n, c in self.clients.items() if c in wanted)


class NodeWait:
    """The deadline for a minimum number of connected nodes.

    Parameters
    ----------
    timeout : float
        Seconds that fewer nodes than needed may stay connected.
    clock : callable
        Seconds of a monotonic clock (a fake one in tests).
    """

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self._since: float | None = None

    def check(self, connected: int, needed: int) -> None:
        """Start, reset or end the wait; raise :class:`NotEnoughNodesError` past the deadline."""
        if connected >= needed:
            self._since = None
            return
        now = self._clock()
        if self._since is None:
            self._since = now
            logger.warning("waiting for nodes: %d connected, %d needed", connected, needed)
        elif now - self._since > self.timeout:
            raise NotEnoughNodesError(
                f"only {connected} of the {needed} nodes needed were connected for "
                f"{self.timeout:.0f} s; start more SuperNodes, or lower "
                "min-available-clients / raise node-wait-timeout-s"
            )


def sample_key(seed: int | None, phase: str, server_round: int) -> str | None:
    """The seed of the global ``random`` for one sample, or ``None`` (unseeded sampling).

    With a seed, who is sampled depends on (seed, phase, round) only: in a
    deployment, Flower's heartbeat and retry jitter draw from the same global
    ``random`` at times that vary run to run.
    """
    return None if seed is None else f"{seed}:{phase}:{server_round}"


class ClientOrderedGrid:
    """A Grid whose ``get_node_ids`` lists nodes in client-id order; all else is the Grid's.

    Parameters
    ----------
    grid : Grid
        The real grid.
    nodes : NodeDirectory
        Knows (and asks for) each node's client id.
    wait : NodeWait
        Ends the wait for ``needed`` nodes (held-out nodes do not count).
    needed : int
        The inner strategy's ``min_available_nodes``.
    excluded : frozenset of int
        Client ids never listed (held out as unseen clients).
    seed : str, optional
        Seeds the global ``random`` each time the nodes are listed (see :func:`sample_key`).
    """

    def __init__(
        self,
        grid: Grid,
        nodes: NodeDirectory,
        wait: NodeWait,
        needed: int,
        excluded: frozenset[int] = frozenset(),
        seed: str | None = None,
    ) -> None:
        self._grid, self._nodes, self._wait = grid, nodes, wait
        self._needed, self._excluded, self._seed = needed, excluded, seed

    def get_node_ids(self) -> list[int]:
        """Connected node ids in client-id order (held-out clients dropped).

        Raises :class:`NotEnoughNodesError` once fewer than ``needed`` nodes have
        been connected for longer than the wait's timeout.
        """
        ordered = self._nodes.in_client_order(self._grid.get_node_ids(), self._grid, self._excluded)
        self._wait.check(len(ordered), self._needed)
        if self._seed is not None:
            random.seed(self._seed)  # Flower samples from this list right after
        return ordered

    def client_of(self, node_id: int) -> int | None:
        """The client id ``node_id`` reported (stable across restarts, unlike node ids)."""
        return self._nodes.client_of(node_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)
