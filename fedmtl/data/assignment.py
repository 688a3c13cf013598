"""Which tasks each client holds (``task-assignment``, ``tasks-per-client``, ``client-tasks``).

A client holds ``tasks-per-client`` (``k``) of the run's ``tasks`` (``T`` of them),
always listed in the run's task order. The modes:

``round-robin``
    Client ``c`` holds ``tasks[(c + j) % T]`` for ``j < k``.
``counts``
    One task per client (``k = 1`` only): consecutive blocks of client ids of the
    sizes in ``task-counts``, in the order of ``tasks``.
``random``
    Each client a seeded random ``k``-subset (generator seeded by the run seed);
    a task no client drew is then handed, in task order, to a seeded choice
    among the clients holding a task that another client also holds (that
    task is swapped out), so every task is held and the result is a pure
    function of the seed.
``lists``
    ``client-tasks``, one entry per client, tasks joined by ``+``
    (``"digit+parity"``). Entries may hold different numbers of tasks;
    ``tasks-per-client`` must be the most tasks an entry holds.

Every task must be held by at least one client. Errors are
:class:`AssignmentError`, naming the experiment key to change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

TASK_ASSIGNMENTS = ("round-robin", "counts", "random", "lists")
TASK_SEPARATOR = "+"
_RANDOM_STREAM = 0x7A5C  # the generator stream of "random" (apart from the partitioners')


class AssignmentError(ValueError):
    """The task assignment keys do not give every client its tasks; names the key to change."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def parse_client_tasks(entries: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Split ``client-tasks`` entries (``"digit+parity"``) into task tuples, as written.

    Raises
    ------
    AssignmentError
        Naming ``client-tasks``, for an empty entry or an empty task name.
    """
    out = []
    for i, entry in enumerate(entries):
        names = tuple(name.strip() for name in str(entry).split(TASK_SEPARATOR))
        if not all(names):
            raise AssignmentError(
                "client-tasks",
                f"entry {i} ({entry!r}) has an empty task name; write tasks joined by "
                f"'{TASK_SEPARATOR}', e.g. \"digit+parity\"",
            )
        out.append(names)
    return tuple(out)


def _in_order(tasks: Sequence[str], held: set[str]) -> tuple[str, ...]:
    return tuple(task for task in tasks if task in held)


def _round_robin(tasks: Sequence[str], num_clients: int, k: int) -> list[tuple[str, ...]]:
    n = len(tasks)
    return [_in_order(tasks, {tasks[(c + j) % n] for j in range(k)}) for c in range(num_clients)]


def _counts(tasks: Sequence[str], num_clients: int, counts: Mapping[str, int]) -> list[tuple[str]]:
    out = [(task,) for task in tasks for _ in range(counts.get(task, 0))]
    if len(out) != num_clients:
        raise AssignmentError(
            "task-counts", f"counts add up to {len(out)} but num-clients is {num_clients}"
        )
    return out


def _random(tasks: Sequence[str], num_clients: int, k: int, seed: int) -> list[tuple[str, ...]]:
    rng = np.random.default_rng([seed, _RANDOM_STREAM])
    held = [set(rng.choice(len(tasks), size=k, replace=False).tolist()) for _ in range(num_clients)]
    for missing in range(len(tasks)):
        if any(missing in mine for mine in held):
            continue
        # Some task is held twice (N * k >= T slots, fewer than T tasks held): swap one out.
        holders = [sum(t in mine for mine in held) for t in range(len(tasks))]
        donors = [c for c, mine in enumerate(held) if any(holders[t] > 1 for t in mine)]
        client = donors[int(rng.integers(len(donors)))]
        spare = [t for t in sorted(held[client]) if holders[t] > 1]
        held[client].remove(spare[int(rng.integers(len(spare)))])
        held[client].add(missing)
    return [tuple(tasks[t] for t in sorted(mine)) for mine in held]


def _lists(
    tasks: Sequence[str], num_clients: int, k: int, lists: Sequence[Sequence[str]]
) -> list[tuple[str, ...]]:
    if len(lists) != num_clients:
        raise AssignmentError(
            "client-tasks",
            f"has {len(lists)} entries but num-clients is {num_clients}; give one entry per "
            'client, tasks joined by "+" (e.g. ["digit+parity", "ge5"])',
        )
    out = []
    for i, entry in enumerate(lists):
        unknown = [name for name in entry if name not in tasks]
        if unknown:
            raise AssignmentError(
                "client-tasks",
                f"entry {i} names {unknown}, not tasks of this run; allowed: {list(tasks)}",
            )
        if len(set(entry)) != len(entry):
            raise AssignmentError(
                "client-tasks", f"entry {i} lists a task twice: {TASK_SEPARATOR.join(entry)}"
            )
        out.append(_in_order(tasks, set(entry)))
    most = max(len(entry) for entry in out)
    if most != k:
        raise AssignmentError(
            "tasks-per-client",
            f"is {k}, but the most tasks a client-tasks entry holds is {most}: with "
            f'task-assignment = "lists", set tasks-per-client = {most}',
        )
    return out


def _check_sizes(tasks: Sequence[str], num_clients: int, mode: str, k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(tasks):
        raise AssignmentError(
            "tasks-per-client", f"must be an integer from 1 to {len(tasks)} (the tasks), got {k}"
        )
    if mode not in TASK_ASSIGNMENTS:
        raise AssignmentError("task-assignment", f"'{mode}' is not one of {list(TASK_ASSIGNMENTS)}")
    if mode == "counts" and k > 1:
        raise AssignmentError(
            "task-assignment",
            f'"counts" gives each client one task, but tasks-per-client is {k}; use '
            '"round-robin", "random" or "lists" (with client-tasks = ["a+b", ...])',
        )
    if mode == "round-robin" and num_clients + k - 1 < len(tasks):
        raise AssignmentError(
            "num-clients",
            f"round-robin with {k} task(s) per client needs num-clients >= "
            f"{len(tasks) - k + 1} (the number of tasks ({len(tasks)}) - tasks-per-client + 1) "
            f"so that every task is held, got {num_clients}",
        )
    if mode == "random" and num_clients * k < len(tasks):
        raise AssignmentError(
            "num-clients",
            f"{num_clients} clients holding {k} task(s) each cannot hold all {len(tasks)} "
            f"tasks; needs num-clients >= {-(-len(tasks) // k)}",
        )


def assign_tasks(
    tasks: Sequence[str],
    num_clients: int,
    mode: str,
    counts: Mapping[str, int] | None = None,
    *,
    tasks_per_client: int = 1,
    lists: Sequence[Sequence[str]] = (),
    seed: int = 0,
) -> tuple[tuple[str, ...], ...]:
    """Return the tasks each client id holds, each in the order of ``tasks``.

    Parameters
    ----------
    tasks : sequence of str
        The run's tasks, in run order.
    num_clients : int
        How many clients.
    mode : str
        One of :data:`TASK_ASSIGNMENTS` (see the module docstring).
    counts : mapping, optional
        ``task-counts`` (mode ``counts``).
    tasks_per_client : int
        ``k``: each client's number of tasks (``lists``: the most an entry holds).
    lists : sequence of sequences of str
        ``client-tasks`` split into names (:func:`parse_client_tasks`), mode ``lists``.
    seed : int
        The run seed (mode ``random``).

    Raises
    ------
    AssignmentError
        Naming the key to change: ``tasks-per-client``, ``task-assignment``,
        ``task-counts``, ``client-tasks`` or ``num-clients``; also when a task
        would be held by no client.
    """
    _check_sizes(tasks, num_clients, mode, tasks_per_client)
    if mode == "round-robin":
        out = _round_robin(tasks, num_clients, tasks_per_client)
    elif mode == "counts":
        out = list(_counts(tasks, num_clients, counts or {}))
    elif mode == "random":
        out = _random(tasks, num_clients, tasks_per_client, seed)
    else:
        out = _lists(tasks, num_clients, tasks_per_client, lists)
    unheld = [task for task in tasks if not any(task in mine for mine in out)]
    if unheld:
        key = {"counts": "task-counts", "lists": "client-tasks"}.get(mode, "num-clients")
        raise AssignmentError(key, f"no client holds task(s) {unheld}; every task needs one")
    return tuple(out)
