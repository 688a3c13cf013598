"""Task specs and the dataset registry."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmtl.registry import Registry
from fedmtl.task_kinds import TargetError, TargetScale, TaskObjective

LabelFn = Callable[[npt.NDArray[np.int64]], npt.NDArray[Any]]


@dataclass(frozen=True)
class TaskSpec:
    """One task over a dataset's inputs.

    Parameters
    ----------
    name : str
        Unique within its dataset; also the name of the task head.
    num_outputs : int
        Size of the head's output (number of classes; 1 for a regression).
    label_fn : callable
        Maps the dataset's base labels to this task's targets: labels in
        ``[0, num_outputs)`` for a classification, floats for a regression.
    kind : str
        A name in :data:`fedmtl.task_kinds.TASK_KINDS` (``"classification"``,
        ``"regression"``): it decides the loss and the metrics.
    description : str
        One line for tables and help.
    labels : tuple of str
        Names of the labels ``0..num_outputs-1`` where known (empty otherwise).
    target_mean, target_std : float
        A regression's target standardization ``(y - mean) / std``, computed on
        the clients' pool of the task (every client and every aggregated head
        share one scale); MAE and RMSE are reported in the original units.

    Raises
    ------
    RegistryError
        For an unknown kind.
    TargetError
        When ``num_outputs`` or the scale do not fit the kind.
    """

    name: str
    num_outputs: int
    label_fn: LabelFn
    kind: str = "classification"
    description: str = ""
    labels: tuple[str, ...] = ()
    target_mean: float = 0.0
    target_std: float = 1.0

    def __post_init__(self) -> None:
        try:
            self.objective.kind.check_outputs(self.num_outputs)
        except TargetError as error:
            raise TargetError(f"task '{self.name}': {error}") from None

    @property
    def objective(self) -> TaskObjective:
        """The task's kind and target scale, as training and evaluation use them."""
        return TaskObjective.named(self.kind, TargetScale(self.target_mean, self.target_std))


def regression_task(
    name: str,
    pool_targets: npt.NDArray[Any],
    label_fn: LabelFn | None = None,
    description: str = "",
) -> TaskSpec:
    """A regression task (one output) standardized with its clients' pool of targets.

    ``pool_targets`` are the task's targets over the pool the clients share
    (outside any pretraining source split); the scale is their mean and
    population std (:meth:`fedmtl.task_kinds.TargetScale.of`), so every client
    and every aggregated head work in one scale.

    Raises
    ------
    TargetError
        For empty or non-finite targets.
    """
    scale = TargetScale.of(pool_targets)
    return TaskSpec(
        name,
        1,
        label_fn or identity_labels,
        kind="regression",
        description=description,
        target_mean=scale.mean,
        target_std=scale.std,
    )


def identity_labels(y: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Label function of a task whose data already carries task labels."""
    return y


@dataclass(frozen=True)
class BaseData:
    """A dataset's inputs and base labels, before any task labelling.

    ``x`` is a numeric array (images, features) or an object array of ``str``
    (texts); the backbone's ``prepare`` turns a slice of it into model input.
    ``client_ids``, where the data is naturally partitioned, is the id (text) of
    the writer, user or site of each example (the ``natural`` partitioner).
    """

    x: npt.NDArray[Any]
    y: npt.NDArray[Any]  # int64 class ids; float64 targets for a regression's task data
    client_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} inputs but {len(self.y)} labels")
        if self.client_ids is not None and len(self.client_ids) != len(self.y):
            raise ValueError(f"{len(self.client_ids)} client ids but {len(self.y)} labels")


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: how to load it and which tasks it offers.

    Parameters
    ----------
    name : str
        Registry name.
    load : callable, optional
        Returns the :class:`BaseData` whose inputs every task shares (offline,
        deterministic); each task labels them through its ``label_fn``.
    tasks : mapping
        Task name to :class:`TaskSpec`.
    task_data : callable, optional
        For datasets whose tasks have their *own* inputs (WordNet nouns vs.
        fortunes): task name to its :class:`BaseData`, labels already in the
        task's label space. Exactly one of ``load`` and ``task_data`` is set.
    input_kind : str
        ``"image"``, ``"text"`` or ``"vector"``: what a backbone must accept.
    source_fraction : float
        Share of the data held out as the pretraining source split (no client sees it).
    source_seed : int
        Fixed seed of that split, independent of any experiment's seed, so the
        split never changes under a shipped checkpoint.
    """

    name: str
    load: Callable[[], BaseData] | None = None
    tasks: Mapping[str, TaskSpec] = field(default_factory=dict)
    source_fraction: float = 0.3
    source_seed: int = 1797
    task_data: Callable[[str], BaseData] | None = None
    input_kind: str = "image"

    def __post_init__(self) -> None:
        if (self.load is None) == (self.task_data is None):
            raise ValueError(f"dataset '{self.name}': set exactly one of load and task_data")

    @property
    def shared_inputs(self) -> bool:
        """Whether all tasks label the same inputs (else each task has its own)."""
        return self.load is not None

    def source_split(
        self, num_examples: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Return (source indices for pretraining, pool indices for clients)."""
        order = np.random.default_rng(self.source_seed).permutation(num_examples)
        cut = round(self.source_fraction * num_examples)
        return np.sort(order[:cut]), np.sort(order[cut:])


class DatasetOptionError(ValueError):
    """A ``dataset-options`` entry is unknown or has a bad value."""


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: a factory from ``dataset-options`` to its spec.

    Parameters
    ----------
    build : callable
        ``build(options) -> DatasetSpec``; raises :class:`DatasetOptionError`
        for a bad value. Should be cheap: heavy reading belongs in ``load``.
    options : tuple of str
        The option names it accepts (others are refused before ``build``).
    description : str
        One line for ``fedmtl datasets`` and docs.
    """

    build: Callable[[Mapping[str, Any]], DatasetSpec]
    options: tuple[str, ...] = ()
    description: str = ""


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def get_dataset_spec(name: str, options: Mapping[str, Any] | None = None) -> DatasetSpec:
    """Return the dataset ``name`` built with ``options`` (cached per value).

    Raises
    ------
    RegistryError
        For an unknown name.
    DatasetOptionError
        For an option the dataset does not take, or a bad option value.
    """
    return _cached_spec(name, json.dumps(dict(options or {}), sort_keys=True, default=str))


@lru_cache(maxsize=16)
def _cached_spec(name: str, options_json: str) -> DatasetSpec:
    entry = DATASETS.get(name)
    options = json.loads(options_json)
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        allowed = list(entry.options) or "none"
        raise DatasetOptionError(
            f"dataset '{name}' has no option {unknown[0]!r}; allowed options: {allowed}"
        )
    return entry.build(options)
