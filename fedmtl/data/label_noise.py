"""Seeded noise on a task's training targets (``label-noise``): noisy supervision, clean tests.

``label-noise = {task = level}`` corrupts the *training* targets of ``task`` on
every client holding it; test splits stay clean, so the metrics measure how much
the noisy supervision hurts (and whether a task weighting learns to trust the
task less). What ``level`` means depends on the task's kind (a small registry,
:data:`LABEL_NOISES`, so no caller branches on the kind):

- ``classification``: the fraction (0..1) of a client's training labels
  replaced, ``round(level * n)`` of its ``n`` labels chosen at random, each by a
  class drawn uniformly from the *other* classes (so exactly that many labels
  change; with two classes, ``level = 0.5`` leaves no signal);
- ``regression``: Gaussian noise of standard deviation ``level`` times the
  task's target std (:attr:`fedmtl.data.TaskSpec.target_std`, the pool's) added
  to each training target (``level >= 0``, no upper bound).

Draws are seeded by (run ``seed``, client id, task name), so a run is
reproducible, clients get different noise and adding a task leaves another
task's noise unchanged. A simulation key: it changes the data that
:func:`fedmtl.data.build_federation` gives the simulated clients (and the device
files written from it); a device's own data files are read as they are.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmtl.data.registry import TaskSpec
from fedmtl.registry import Registry

__all__ = [
    "LABEL_NOISES",
    "LabelNoise",
    "LabelNoiseError",
    "check_label_noise",
    "flip_labels",
    "gaussian_targets",
    "noisy_train_targets",
]

# Salt of the draws, so they never coincide with the partition's or a shift's.
_SALT = 0x1AB31

NoiseFn = Callable[[npt.NDArray[Any], float, TaskSpec, np.random.Generator], npt.NDArray[Any]]


class LabelNoiseError(ValueError):
    """A ``label-noise`` entry names a task outside the run or has a level out of range."""


@dataclass(frozen=True)
class LabelNoise:
    """How one task kind's training targets are corrupted.

    Parameters
    ----------
    apply : callable
        ``apply(y, level, task, rng) -> y'``: a new array of ``y``'s shape and
        dtype (``y`` untouched).
    max_level : float or None
        The largest level allowed (``None``: no bound).
    level : str
        What the level means (errors and docs).
    """

    apply: NoiseFn
    max_level: float | None
    level: str


def flip_labels(
    y: npt.NDArray[Any], level: float, task: TaskSpec, rng: np.random.Generator
) -> npt.NDArray[Any]:
    """``round(level * len(y))`` labels of ``y``, chosen at random, moved to another class.

    The new class is uniform over the ``task.num_outputs - 1`` other classes.
    """
    out = np.array(y, copy=True)
    count = round(level * len(out))
    if count == 0 or task.num_outputs < 2:
        return out
    positions = rng.choice(len(out), size=count, replace=False)
    step = rng.integers(1, task.num_outputs, size=count)
    out[positions] = (out[positions] + step) % task.num_outputs
    return out


def gaussian_targets(
    y: npt.NDArray[Any], level: float, task: TaskSpec, rng: np.random.Generator
) -> npt.NDArray[Any]:
    """``y`` plus Gaussian noise of std ``level * task.target_std``."""
    noise = rng.normal(0.0, level * task.target_std, size=np.shape(y))
    return np.asarray(np.asarray(y, dtype=np.float64) + noise, dtype=np.asarray(y).dtype)


LABEL_NOISES: Registry[LabelNoise] = Registry("label-noise kind")
LABEL_NOISES.add(
    "classification",
    LabelNoise(flip_labels, max_level=1.0, level="the fraction of training labels replaced"),
)
LABEL_NOISES.add(
    "regression",
    LabelNoise(gaussian_targets, max_level=None, level="the noise std in target stds"),
)


def _noise_of(task: TaskSpec) -> LabelNoise:
    if task.kind not in LABEL_NOISES:
        raise LabelNoiseError(
            f"task '{task.name}' is a {task.kind} task; label noise is defined for "
            f"{LABEL_NOISES.names()} tasks only"
        )
    return LABEL_NOISES.get(task.kind)


def check_label_noise(
    levels: Mapping[str, Any], run_tasks: Collection[str], specs: Mapping[str, TaskSpec]
) -> None:
    """Each entry names a run task and has a finite level in its kind's range.

    Raises
    ------
    LabelNoiseError
        Naming the task and what is allowed.
    """
    unknown = sorted(set(levels) - set(run_tasks))
    if unknown:
        raise LabelNoiseError(f"names tasks not in 'tasks': {unknown}")
    for name, level in levels.items():
        noise = _noise_of(specs[name])
        number = not isinstance(level, bool) and isinstance(level, int | float)
        high = noise.max_level
        if (
            not number
            or not math.isfinite(level)
            or level < 0
            or (high is not None and level > high)
        ):
            bound = f" and <= {high:g}" if high is not None else ""
            raise LabelNoiseError(
                f"'{name}' = {level!r}: a {specs[name].kind} task's level ({noise.level}) "
                f"must be a finite number >= 0{bound}"
            )


def noisy_train_targets(
    y_train: npt.NDArray[Any], level: float, task: TaskSpec, seed: int, client_id: int
) -> npt.NDArray[Any]:
    """``y_train`` of ``client_id``'s ``task`` with its noise (``level`` 0: a copy, unchanged).

    Raises
    ------
    LabelNoiseError
        For a task kind without noise, or a level out of range.
    """
    check_label_noise({task.name: level}, (task.name,), {task.name: task})
    rng = np.random.default_rng([seed, client_id, zlib.crc32(task.name.encode()), _SALT])
    return _noise_of(task).apply(y_train, level, task, rng)
