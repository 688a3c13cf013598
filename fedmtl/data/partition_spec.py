"""The part of an experiment that decides which client holds which examples and task."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fedmtl.data.assignment import assign_tasks
from fedmtl.data.registry import DatasetSpec, get_dataset_spec


def num_test_examples(num_examples: int, test_fraction: float) -> int:
    """How many of a client's ``num_examples`` go to its local test split.

    ``round(test_fraction * n)``, at least one, and none for a client of a single
    example (it trains on it).
    """
    if num_examples <= 1:
        return 0
    return max(1, round(test_fraction * num_examples))


def min_split_examples(test_fraction: float) -> int:
    """The fewest examples a client needs for one train and one test example."""
    n = 2
    while n - num_test_examples(n, test_fraction) < 1:  # ends: test-fraction < 1
        n += 1
    return n


@dataclass(frozen=True)
class PartitionSpec:
    """Everything that decides which client holds which examples and tasks.

    Fields are the snake_case twins of the experiment keys of the same name
    (``dirichlet_alpha`` is ``dirichlet-alpha``; ``client_tasks`` holds the
    ``client-tasks`` entries split at ``+``; ``label_noise`` the ``label-noise``
    table as sorted ``(task, level)`` pairs); hashable, so it keys caches.
    """

    dataset: str
    tasks: tuple[str, ...]
    num_clients: int
    task_assignment: str = "round-robin"
    task_counts: tuple[tuple[str, int], ...] = ()
    tasks_per_client: int = 1
    client_tasks: tuple[tuple[str, ...], ...] = ()  # "lists": each client's tasks
    partitioner: str = "dirichlet"
    dirichlet_alpha: float = 1.0
    classes_per_client: int = 4
    test_fraction: float = 0.25
    seed: int = 0
    dataset_options: str = "{}"  # canonical JSON, so the spec stays hashable
    max_examples_per_task: int = 0
    input_shift: str = "none"
    input_shift_strength: float = 0.0
    input_shift_groups: int = 0
    label_noise: tuple[tuple[str, float], ...] = ()

    def assignment(self) -> tuple[tuple[str, ...], ...]:
        """The tasks of each client id, in run task order (:func:`assign_tasks`)."""
        return assign_tasks(
            self.tasks,
            self.num_clients,
            self.task_assignment,
            dict(self.task_counts),
            tasks_per_client=self.tasks_per_client,
            lists=self.client_tasks,
            seed=self.seed,
        )

    def dataset_spec(self) -> DatasetSpec:
        """The dataset these partitions are drawn from."""
        options: dict[str, Any] = json.loads(self.dataset_options)
        return get_dataset_spec(self.dataset, options)
