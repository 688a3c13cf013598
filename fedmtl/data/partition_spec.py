"""The part of an experiment that decides which client holds which examples and task."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fedmtl.data.registry import DatasetSpec, get_dataset_spec


@dataclass(frozen=True)
class PartitionSpec:
    """Everything that decides which client holds which examples and task.

    Fields are the snake_case twins of the experiment keys of the same name
    (``dirichlet_alpha`` is ``dirichlet-alpha``); hashable, so it keys caches.
    """

    dataset: str
    tasks: tuple[str, ...]
    num_clients: int
    task_assignment: str = "round-robin"
    task_counts: tuple[tuple[str, int], ...] = ()
    partitioner: str = "dirichlet"
    dirichlet_alpha: float = 1.0
    classes_per_client: int = 4
    test_fraction: float = 0.25
    seed: int = 0
    dataset_options: str = "{}"  # canonical JSON, so the spec stays hashable
    max_examples_per_task: int = 0

    def dataset_spec(self) -> DatasetSpec:
        """The dataset these partitions are drawn from."""
        options: dict[str, Any] = json.loads(self.dataset_options)
        return get_dataset_spec(self.dataset, options)
