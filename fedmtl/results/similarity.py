"""Task interference over a run: each task pair's mean ``task-similarity``, as matrix and table.

Each training round's record may hold ``task-similarity``: the cosine of two
task groups' mean shared-scope updates (:mod:`strategies.interference`). The
run's summary is the plain mean over the rounds that report a pair; a pair
reported in no round is missing (``nan`` in the matrix, ``-`` in the table).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedmtl.results.round_record import RoundRecord

__all__ = ["mean_task_similarity", "similarity_matrix", "task_similarity_table"]


def mean_task_similarity(records: Sequence[RoundRecord]) -> dict[tuple[str, str], float]:
    """``(task_a, task_b)`` (``task_a < task_b``) to the mean cosine over the rounds reporting it.

    Non-finite values are ignored; a pair written in either order counts as one.
    """
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for record in records:
        for a, row in record.task_similarity.items():
            for b, value in row.items():
                if a != b and math.isfinite(value):
                    values[(min(a, b), max(a, b))].append(float(value))
    return {pair: float(np.mean(v)) for pair, v in sorted(values.items())}


def similarity_matrix(
    pairs: dict[tuple[str, str], float],
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
    """The report's lines on task interference; empty when no round reports a task pair."""
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
