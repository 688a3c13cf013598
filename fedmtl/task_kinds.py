"""Task kinds: what a task's head predicts, how it is trained and how it is scored.

A task spec (:class:`fedmtl.data.TaskSpec`) names its kind; training and
evaluation (:mod:`fedmtl.training`) take the kind from :data:`TASK_KINDS` and
never branch on it. A kind says

- which targets it takes (:meth:`TaskKind.check_targets`) and how many outputs
  its head has (:meth:`TaskKind.check_outputs`),
- how targets become tensors (:meth:`TaskKind.targets`; regression targets are
  standardized with the task's :class:`TargetScale`),
- its training loss (:meth:`TaskKind.loss`, a mean or a sum over the batch), and
- the metrics it reports at evaluation (:meth:`TaskKind.scores`, over the whole
  test split), the first one being its primary metric (tables, best round,
  plots), with :attr:`TaskKind.lower_is_better` naming the error metrics
  (their "worst client" is the highest).

Built in: ``classification`` (cross-entropy; ``accuracy``, ``macro-f1``) and
``regression`` (Huber loss, ``delta = 1``, on standardized targets: squared
error for small errors, linear beyond one standard deviation, so a large
initial error does not blow up the step; ``mae``, ``rmse`` in the target's own
units, ``r2``). A new kind is one subclass and one
``TASK_KINDS.add`` line (and its primary metric and error metrics in
:mod:`fedmtl.metrics`, which tests/test_task_kinds.py checks for every kind).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedmtl.registry import Registry


class TargetError(ValueError):
    """A task's targets, outputs or scale do not fit its kind."""


@dataclass(frozen=True)
class TargetScale:
    """Standardization of a regression task's targets: ``z = (y - mean) / std``.

    The task spec declares it, computed on the clients' pool of the task (so
    every client, and every aggregated head, works in one scale). Reported
    errors (MAE, RMSE) are in the original units.
    """

    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.mean):
            raise TargetError(f"target mean must be finite, got {self.mean}")
        if not (math.isfinite(self.std) and self.std > 0):
            raise TargetError(f"target std must be finite and > 0, got {self.std}")

    @classmethod
    def of(cls, values: npt.NDArray[Any]) -> TargetScale:
        """The mean and (population) std of ``values``; std 1 when they are constant."""
        array = np.asarray(values, dtype=np.float64)
        if array.size == 0 or not np.isfinite(array).all():
            raise TargetError("targets to standardize must be non-empty and finite")
        std = float(array.std())
        return cls(mean=float(array.mean()), std=std if std > 0 else 1.0)


class TaskKind(ABC):
    """How one kind of task is trained and scored (see the module docstring)."""

    #: Evaluation metrics, primary first (names as they appear in metrics rows).
    metrics: tuple[str, ...] = ()
    #: The metrics among :attr:`metrics` where a lower value is better.
    lower_is_better: frozenset[str] = frozenset()

    @property
    def primary(self) -> str:
        """The metric tables, best-round and plots use for this kind."""
        return self.metrics[0]

    @abstractmethod
    def init_head(self, head: nn.Module) -> None:
        """Adjust a freshly built (seeded) head in place, or leave it as it is."""

    @abstractmethod
    def check_outputs(self, num_outputs: int) -> None:
        """Raise :class:`TargetError` when a head of ``num_outputs`` cannot serve this kind."""

    @abstractmethod
    def check_targets(self, y: npt.NDArray[Any], num_outputs: int) -> None:
        """Raise :class:`TargetError` when ``y`` are not valid targets of this kind."""

    @abstractmethod
    def targets(self, y: npt.NDArray[Any], scale: TargetScale) -> torch.Tensor:
        """The targets as the loss takes them (CPU tensor)."""

    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
        """The loss of ``outputs`` (batch, num_outputs) against ``targets`` (``mean``/``sum``)."""

    @abstractmethod
    def scores(
        self, outputs: torch.Tensor, targets: torch.Tensor, scale: TargetScale
    ) -> dict[str, float]:
        """Every metric of :attr:`metrics` over a whole split (0.0 each when it is empty)."""


def macro_f1(predicted: npt.NDArray[np.int64], truth: npt.NDArray[np.int64]) -> float:
    """Unweighted mean F1 over the classes present in ``truth`` or ``predicted``.

    Per class, ``F1 = 2 TP / (2 TP + FP + FN)`` (scikit-learn's ``f1_score(...,
    average="macro")`` with its default labels). No examples give 0.0.
    """
    classes = np.union1d(predicted, truth)
    if classes.size == 0:
        return 0.0
    scores = []
    for c in classes:
        tp = int(np.sum((predicted == c) & (truth == c)))
        fp = int(np.sum((predicted == c) & (truth != c)))
        fn = int(np.sum((predicted != c) & (truth == c)))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


class Classification(TaskKind):
    """Integer labels ``0..num_outputs-1``; cross-entropy; accuracy and macro-F1."""

    metrics = ("accuracy", "macro-f1")

    def init_head(self, head: nn.Module) -> None:
        """Keep the seeded initialisation."""

    def check_outputs(self, num_outputs: int) -> None:
        """At least one class."""
        if num_outputs < 1:
            raise TargetError(f"a classification head needs >= 1 outputs, got {num_outputs}")

    def check_targets(self, y: npt.NDArray[Any], num_outputs: int) -> None:
        """Integer labels in ``0..num_outputs-1``."""
        if y.dtype.kind not in "iu":
            raise TargetError(f"labels must be integers, got dtype {y.dtype}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_outputs):
            raise TargetError(
                f"labels span {int(y.min())}..{int(y.max())}, outside 0..{num_outputs - 1}"
            )

    def targets(self, y: npt.NDArray[Any], scale: TargetScale) -> torch.Tensor:
        """The labels as an integer tensor, unchanged."""
        return torch.from_numpy(y)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
        """Cross-entropy of the logits."""
        return nn.functional.cross_entropy(outputs, targets, reduction=reduction)

    def scores(
        self, outputs: torch.Tensor, targets: torch.Tensor, scale: TargetScale
    ) -> dict[str, float]:
        """Accuracy (argmax) and macro-F1."""
        if len(targets) == 0:
            return dict.fromkeys(self.metrics, 0.0)
        predicted = outputs.argmax(1)
        n = len(targets)
        return {
            "accuracy": int((predicted == targets).sum()) / n,
            "macro-f1": macro_f1(predicted.cpu().numpy(), targets.cpu().numpy()),
        }


def regression_scores(
    predicted: npt.NDArray[np.float64], truth: npt.NDArray[np.float64]
) -> dict[str, float]:
    """MAE, RMSE and R² of ``predicted`` against ``truth`` (same units; 0.0 each when empty).

    ``R² = 1 - SS_res / SS_tot``; with constant ``truth`` it is 1.0 for a perfect
    prediction and 0.0 otherwise (scikit-learn's ``force_finite``).
    """
    if truth.size == 0:
        return {"mae": 0.0, "rmse": 0.0, "r2": 0.0}
    error = predicted - truth
    ss_res = float(np.sum(error**2))
    ss_tot = float(np.sum((truth - truth.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float(ss_res == 0)
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": math.sqrt(ss_res / truth.size),
        "r2": r2,
    }


class Regression(TaskKind):
    """Finite real targets, one output; Huber loss on standardized targets; MAE, RMSE, R²."""

    metrics = ("mae", "rmse", "r2")
    lower_is_better = frozenset({"mae", "rmse"})

    def init_head(self, head: nn.Module) -> None:
        """Zero the head: it starts predicting the target mean.

        A random head on large pretrained features starts many standard
        deviations off, and its first gradients would wreck a shared backbone;
        a zero head sends the backbone no gradient until it has a direction.
        """
        with torch.no_grad():
            for param in head.parameters():
                param.zero_()

    def check_outputs(self, num_outputs: int) -> None:
        """Exactly one output."""
        if num_outputs != 1:
            raise TargetError(f"a regression head has num_outputs = 1, got {num_outputs}")

    def check_targets(self, y: npt.NDArray[Any], num_outputs: int) -> None:
        """One finite number per example."""
        if y.dtype.kind not in "iuf":
            raise TargetError(f"regression targets must be numbers, got dtype {y.dtype}")
        if y.ndim != 1:
            raise TargetError(f"regression targets must be one number each, got shape {y.shape}")
        if not np.isfinite(y).all():
            raise TargetError("regression targets hold NaN or infinite values")

    def targets(self, y: npt.NDArray[Any], scale: TargetScale) -> torch.Tensor:
        """``(y - mean) / std`` as float32."""
        z = (np.asarray(y, dtype=np.float64) - scale.mean) / scale.std
        return torch.from_numpy(z.astype(np.float32))

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
        """Huber loss (``delta = 1``) on the standardized scale."""
        return nn.functional.huber_loss(outputs.squeeze(-1), targets, reduction=reduction)

    def scores(
        self, outputs: torch.Tensor, targets: torch.Tensor, scale: TargetScale
    ) -> dict[str, float]:
        """MAE and RMSE in the original units, and R²."""
        if len(targets) == 0:
            return dict.fromkeys(self.metrics, 0.0)
        z_pred = outputs.squeeze(-1).detach().cpu().numpy().astype(np.float64)
        z_true = targets.detach().cpu().numpy().astype(np.float64)
        return regression_scores(z_pred * scale.std + scale.mean, z_true * scale.std + scale.mean)


#: Kind name (``TaskSpec.kind``) -> how such a task is trained and scored.
TASK_KINDS: Registry[TaskKind] = Registry("task kind")
TASK_KINDS.add("classification", Classification())
TASK_KINDS.add("regression", Regression())


@dataclass(frozen=True)
class TaskObjective:
    """One task's kind and target scale: what :mod:`fedmtl.training` trains and scores with."""

    kind: TaskKind
    scale: TargetScale = TargetScale()

    @classmethod
    def named(cls, kind: str, scale: TargetScale | None = None) -> TaskObjective:
        """The objective of kind ``kind`` (a name in :data:`TASK_KINDS`)."""
        return cls(TASK_KINDS.get(kind), scale or TargetScale())

    def targets(self, y: npt.NDArray[Any]) -> torch.Tensor:
        """``y`` as the kind's loss takes them (standardized for a regression)."""
        return self.kind.targets(y, self.scale)

    def scores(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """The kind's metrics of ``outputs`` against :meth:`targets` over a whole split."""
        return self.kind.scores(outputs, targets, self.scale)


#: The objective of a task that declares nothing: classification.
CLASSIFICATION = TaskObjective.named("classification")
