"""Task interference over a run: task pairs' mean cosines, as matrix and tables.

Two sources, one shape (``{task_a: {task_b: cosine}}`` per training round):

* ``task-similarity`` (server side, :func:`server_pairs`): the cosine of two
  task groups' mean shared-scope updates (:mod:`strategies.interference`);
* ``client-task-similarity`` (client side, :func:`client_pairs`): the mean over
  the clients holding both tasks of the cosine between the two tasks' gradients
  on the client's shared parameters.

A run's summary of a pair is the plain mean over the rounds that report it; a
pair reported in no round is missing (``nan`` in the matrix, ``-`` in tables).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from fedmtl.results.round_record import PHASES, RoundRecord

__all__ = [
    "PairsOf",
    "client_pairs",
    "client_similarity_table",
    "clients_holding_both",
    "mean_task_similarity",
    "round_pairs",
    "server_pairs",
    "similarity_matrix",
    "task_similarity_table",
]

#: Where a round's task-pair cosines are read from (:func:`server_pairs`, :func:`client_pairs`).
PairsOf = Callable[[RoundRecord], Mapping[str, Mapping[str, float]]]
Pair = tuple[str, str]


def server_pairs(record: RoundRecord) -> Mapping[str, Mapping[str, float]]:
    """The round's ``task-similarity``: task groups' mean shared-scope update cosines."""
    return record.task_similarity


def client_pairs(record: RoundRecord) -> Mapping[str, Mapping[str, float]]:
    """The round's ``client-task-similarity``: clients' task-gradient cosines."""
    return record.client_task_similarity


def round_pairs(record: RoundRecord, pairs_of: PairsOf = server_pairs) -> dict[Pair, float]:
    """``(task_a, task_b)`` (``task_a < task_b``) to the round's cosine; non-finite ones dropped."""
    return {
        (min(a, b), max(a, b)): float(value)
        for a, row in pairs_of(record).items()
        for b, value in row.items()
        if a != b and math.isfinite(value)
    }


def mean_task_similarity(
    records: Sequence[RoundRecord], pairs_of: PairsOf = server_pairs
) -> dict[Pair, float]:
    """``(task_a, task_b)`` (``task_a < task_b``) to the mean cosine over the rounds reporting it.

    Non-finite values are ignored; a pair written in either order counts as one.
    ``pairs_of`` chooses the source (server side by default).
    """
    values: dict[Pair, list[float]] = defaultdict(list)
    for record in records:
        for pair, value in round_pairs(record, pairs_of).items():
            values[pair].append(value)
    return {pair: float(np.mean(v)) for pair, v in sorted(values.items())}


def similarity_matrix(
    pairs: dict[Pair, float],
) -> tuple[list[str], npt.NDArray[np.float64]]:
    """The sorted tasks and their symmetric matrix: 1 on the diagonal, ``nan`` where missing."""
    tasks = sorted({t for pair in pairs for t in pair})
    index = {t: i for i, t in enumerate(tasks)}
    matrix = np.full((len(tasks), len(tasks)), np.nan)
    np.fill_diagonal(matrix, 1.0)
    for (a, b), value in pairs.items():
        matrix[index[a], index[b]] = matrix[index[b], index[a]] = value
    return tasks, matrix


def task_similarity_table(records: Sequence[RoundRecord]) -> list[str]:
    """The report's lines on server-side task similarity; empty when no round reports a pair."""
    pairs = mean_task_similarity(records)
    if not pairs:
        return []
    tasks, matrix = similarity_matrix(pairs)
    rounds = sum(1 for r in records if r.task_similarity)
    lines = [
        "Task similarity (cosine of the task groups' mean shared-scope updates, "
        f"mean over {rounds} training round{'s' if rounds != 1 else ''}; "
        "1: same direction, 0: orthogonal, -1: opposite):",
        "",
        "| task | " + " | ".join(tasks) + " |",
        "|:---|" + "---:|" * len(tasks),
    ]
    for i, task in enumerate(tasks):
        cells = ["-" if math.isnan(x) else f"{x:.3f}" for x in matrix[i]]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return lines


def clients_holding_both(records: Sequence[RoundRecord]) -> dict[Pair, int]:
    """``(task_a, task_b)`` to the number of distinct clients seen holding both tasks.

    A client holds both when one phase of one round has its rows of both tasks.
    """
    holders: dict[Pair, set[int]] = defaultdict(set)
    for record in records:
        for phase in PHASES:
            held: dict[int, set[str]] = defaultdict(set)
            for row in record.phase(phase).clients:
                held[row.client_id].add(row.task)
            for client, tasks in held.items():
                ordered = sorted(tasks)
                for i, a in enumerate(ordered):
                    for b in ordered[i + 1 :]:
                        holders[(a, b)].add(client)
    return {pair: len(clients) for pair, clients in sorted(holders.items())}


def client_similarity_table(records: Sequence[RoundRecord]) -> list[str]:
    """The report's lines on client-side task interference; empty when no round reports a pair.

    One line per task pair: the clients seen holding both
    (:func:`clients_holding_both`), the last round reporting the pair, its
    cosine and the clients it averages (``client-task-similarity-clients``;
    ``-`` when not recorded), and the mean over the rounds reporting it.
    """
    means = mean_task_similarity(records, client_pairs)
    if not means:
        return []
    last: dict[Pair, tuple[int, float, int | None]] = {}
    rounds: dict[Pair, int] = defaultdict(int)
    for record in sorted(records, key=lambda r: r.round):
        counts = {
            (min(a, b), max(a, b)): n
            for a, row in record.client_task_similarity_clients.items()
            for b, n in row.items()
        }
        for pair, value in round_pairs(record, client_pairs).items():
            last[pair] = (record.round, value, counts.get(pair))
            rounds[pair] += 1
    holders = clients_holding_both(records)
    lines = [
        "Task interference (client gradients): on each client holding two tasks, the "
        "cosine between the tasks' gradients on its shared parameters, averaged over "
        "those clients (1: the tasks pull the same way, 0: orthogonal, -1: they conflict):",
        "",
        "| task a | task b | clients holding both | last round | cosine, last round "
        "| clients, last round | mean over rounds | rounds |",
        "|:---|:---|---:|---:|---:|---:|---:|---:|",
    ]
    for (a, b), mean in means.items():
        when, value, averaged = last[(a, b)]
        held = holders.get((a, b))
        cells = [a, b, "-" if held is None else str(held), str(when), f"{value:.3f}"]
        cells += ["-" if averaged is None else str(averaged), f"{mean:.3f}", str(rounds[(a, b)])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
