"""Task specs and the dataset registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedmtl.registry import Registry

LabelFn = Callable[[npt.NDArray[np.int64]], npt.NDArray[np.int64]]


@dataclass(frozen=True)
class TaskSpec:
    """One task over a dataset's inputs.

    Parameters
    ----------
    name : str
        Unique within its dataset; also the name of the task head.
    num_outputs : int
        Size of the head's output (number of classes).
    label_fn : callable
        Maps the dataset's base labels to this task's labels in ``[0, num_outputs)``.
    kind : str
        ``"classification"`` (the only kind built in so far).
    loss : str
        Name of the training loss (``"cross_entropy"``).
    metrics : tuple of str
        Metrics the client reports besides the loss.
    description : str
        One line for tables and help.
    """

    name: str
    num_outputs: int
    label_fn: LabelFn
    kind: str = "classification"
    loss: str = "cross_entropy"
    metrics: tuple[str, ...] = ("accuracy",)
    description: str = ""


@dataclass(frozen=True)
class BaseData:
    """A dataset's inputs and base labels, before any task labelling."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: how to load it and which tasks it offers.

    Parameters
    ----------
    name : str
        Registry name.
    load : callable
        Returns the :class:`BaseData` (offline, deterministic).
    tasks : mapping
        Task name to :class:`TaskSpec`.
    source_fraction : float
        Share of the data held out as the pretraining source split (no client sees it).
    source_seed : int
        Fixed seed of that split, independent of any experiment's seed, so the
        split never changes under a shipped checkpoint.
    """

    name: str
    load: Callable[[], BaseData]
    tasks: Mapping[str, TaskSpec] = field(default_factory=dict)
    source_fraction: float = 0.3
    source_seed: int = 1797

    def source_split(
        self, num_examples: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Return (source indices for pretraining, pool indices for clients)."""
        order = np.random.default_rng(self.source_seed).permutation(num_examples)
        cut = round(self.source_fraction * num_examples)
        return np.sort(order[:cut]), np.sort(order[cut:])


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def get_dataset_spec(name: str) -> DatasetSpec:
    """Return the registered dataset ``name`` (raises ``RegistryError``)."""
    return DATASETS.get(name)
