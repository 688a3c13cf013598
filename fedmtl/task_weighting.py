"""Task weighting: how a client with several tasks combines their losses and gradients.

A client holding several tasks trains one model (a shared backbone, one head per
task) on one objective built from the tasks' losses. A :class:`TaskWeighting`
(chosen by the ``task-weighting`` key, from :data:`TASK_WEIGHTINGS`) says

- the scalar objective (:meth:`TaskWeighting.objective`) the trainer
  back-propagates into the heads and the weighting's own parameters
  (:meth:`TaskWeighting.parameters`, trained by the client's optimizer),
- the multiplier of each task's gradient on the shared parameters
  (:meth:`TaskWeighting.shared_weights`, ``d objective / d loss_t``) and how the
  weighted task gradients become the shared parameters' gradient
  (:meth:`TaskWeighting.combine`; PCGrad projects conflicting ones, which needs
  each task's gradient apart: :attr:`TaskWeighting.needs_task_gradients`),
- what it learns across epochs (:meth:`TaskWeighting.end_epoch`) and keeps in
  the client's local state between rounds (:meth:`TaskWeighting.state`,
  :meth:`TaskWeighting.load_state`; never sent to the server).

Built in: ``equal``, ``fixed`` (``task-weights``), ``uncertainty`` (Kendall et
al. 2018), ``dwa`` (``dwa-temperature``; Liu et al. 2019) and ``pcgrad`` (Yu et
al. 2020). A new weighting is one subclass and one ``TASK_WEIGHTINGS.add`` line.
Plain torch: no Flower types, no models or data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedmtl.registry import Registry, RegistryError


def _no_weights() -> Mapping[str, float]:
    return MappingProxyType({})


@dataclass(frozen=True)
class WeightingOptions:
    """The run's task-weighting settings (config keys in parentheses).

    Parameters
    ----------
    weights : Mapping[str, float]
        ``fixed``: one weight per task of the run, finite and >= 0 (``task-weights``).
    temperature : float
        ``dwa``: the softmax temperature, finite and > 0 (``dwa-temperature``).
    """

    weights: Mapping[str, float] = field(default_factory=_no_weights)
    temperature: float = 2.0

    def __post_init__(self) -> None:
        for task, weight in self.weights.items():
            if not isinstance(weight, (int, float)) or isinstance(weight, bool):
                raise ValueError(
                    f"task-weights: weight of '{task}' must be a number, got {weight!r}"
                )
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(
                    f"task-weights: weight of '{task}' must be finite and >= 0, got {weight}"
                )
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"dwa-temperature must be finite and > 0, got {self.temperature}")


def _check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    names = tuple(tasks)
    if not names:
        raise ValueError("a task weighting needs at least one task")
    if any(not isinstance(name, str) or not name for name in names):
        raise ValueError(f"task names must be non-empty strings, got {list(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique, got {list(names)}")
    return names


def _check_keys(what: str, given: Mapping[str, Any], tasks: tuple[str, ...]) -> None:
    missing = [task for task in tasks if task not in given]
    unknown = sorted(set(given) - set(tasks))
    if missing or unknown:
        raise ValueError(
            f"{what}: expected one entry per task {list(tasks)}; "
            f"missing {missing}, unknown {unknown}"
        )


def _flatten(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads]) if grads else torch.zeros(0)


def _check_pair(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> None:
    if len(a) != len(b):
        raise ValueError(f"gradient lists differ in length: {len(a)} != {len(b)}")
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x.shape != y.shape:
            raise ValueError(f"gradient {i} differs in shape: {tuple(x.shape)} != {tuple(y.shape)}")


class TaskWeighting:
    """The ``equal`` weighting: every task's loss counts once (the objective is their sum).

    LibMTL's "EW". With one task the objective is that task's loss tensor itself,
    so single-task training is unchanged. Subclasses override the hooks they need.

    Parameters
    ----------
    tasks : Sequence[str]
        The tasks the client holds (unique; their order is the run's task order).
    options : WeightingOptions
        The run's weighting settings.
    seed : int
        Seeds any randomness of the weighting (PCGrad's projection order).
    """

    #: Whether :meth:`combine` needs each task's own gradient on the shared parameters.
    needs_task_gradients: ClassVar[bool] = False

    def __init__(self, tasks: Sequence[str], options: WeightingOptions, seed: int) -> None:
        self.tasks = _check_tasks(tasks)
        self.options = options
        self.seed = seed

    # ------------------------------------------------------------------ hooks
    def parameters(self) -> list[nn.Parameter]:
        """The weighting's own trainable parameters (none here)."""
        return []

    def loss_weights(self) -> dict[str, float]:
        """The constant multiplier of each task's loss in the objective (1 here)."""
        return {task: 1.0 for task in self.tasks}

    def objective(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The scalar to back-propagate: ``sum_t w_t * L_t`` with :meth:`loss_weights`."""
        self._check_losses(losses)
        weights = self.loss_weights()
        total: torch.Tensor | None = None
        for task in self.tasks:
            term = losses[task] if weights[task] == 1.0 else weights[task] * losses[task]
            total = term if total is None else total + term
        assert total is not None
        return total

    def shared_weights(self, losses: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """``d objective / d loss_t``: the multiplier of task ``t``'s shared-parameter gradient."""
        self._check_losses(losses)
        return self.loss_weights()

    def combine(
        self, grads: Mapping[str, Sequence[torch.Tensor]], weights: Mapping[str, float]
    ) -> list[torch.Tensor]:
        """The shared parameters' gradient: ``sum_t w_t g_t`` (entry by entry)."""
        scaled = self._scaled(grads, weights)
        return [torch.stack(entries).sum(dim=0) for entries in zip(*scaled.values(), strict=True)]

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:
        """Called after every local epoch with that epoch's mean loss of each task."""
        _check_keys("mean losses", mean_losses, self.tasks)

    def state(self) -> dict[str, npt.NDArray[Any]]:
        """What the client keeps between rounds (none here)."""
        return {}

    def load_state(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Restore :meth:`state`; unknown, missing, misshapen or non-finite arrays are refused."""
        expected = self.state()
        missing = sorted(set(expected) - set(state))
        unknown = sorted(set(state) - set(expected))
        if missing or unknown:
            raise ValueError(
                f"{type(self).__name__} state: missing {missing}, unknown {unknown} "
                f"(expected {sorted(expected)})"
            )
        for key, array in state.items():
            value = np.asarray(array)
            if not np.issubdtype(value.dtype, np.number) or not np.isfinite(value).all():
                raise ValueError(f"{type(self).__name__} state '{key}' must be finite numbers")
            self._check_shape(key, value, expected[key])
        self._load(state)

    # ---------------------------------------------------------------- helpers
    def _check_shape(self, key: str, value: npt.NDArray[Any], expected: npt.NDArray[Any]) -> None:
        if value.shape != expected.shape:
            raise ValueError(
                f"{type(self).__name__} state '{key}' has shape {value.shape}, "
                f"expected {expected.shape}"
            )

    def _load(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Take the checked ``state`` (subclasses with state override)."""

    def _check_losses(self, losses: Mapping[str, torch.Tensor]) -> None:
        _check_keys("task losses", losses, self.tasks)
        for task in self.tasks:
            if losses[task].dim() != 0:
                raise ValueError(
                    f"loss of task '{task}' must be a scalar, got shape {tuple(losses[task].shape)}"
                )

    def _scaled(
        self, grads: Mapping[str, Sequence[torch.Tensor]], weights: Mapping[str, float]
    ) -> dict[str, list[torch.Tensor]]:
        """Each task's gradient list times its weight, checked (tasks' order)."""
        _check_keys("task gradients", grads, self.tasks)
        _check_keys("gradient weights", weights, self.tasks)
        first = grads[self.tasks[0]]
        for task in self.tasks[1:]:
            _check_pair(first, grads[task])
        for task in self.tasks:
            if not math.isfinite(weights[task]):
                raise ValueError(f"gradient weight of task '{task}' must be finite")
        return {
            task: [g if weights[task] == 1.0 else weights[task] * g for g in grads[task]]
            for task in self.tasks
        }


class FixedWeighting(TaskWeighting):
    """``fixed``: each task's loss times a constant weight from ``task-weights``.

    The classic hand-tuned linear scalarisation ``sum_t w_t L_t`` (e.g. Ruder,
    "An Overview of Multi-Task Learning in Deep Neural Networks", 2017). Every
    task the client holds needs a weight.
    """

    def __init__(self, tasks: Sequence[str], options: WeightingOptions, seed: int) -> None:
        super().__init__(tasks, options, seed)
        missing = [task for task in self.tasks if task not in options.weights]
        if missing:
            raise ValueError(
                f"task-weights has no weight for task(s) {missing}; "
                f"task-weighting 'fixed' needs one for every task, got {dict(options.weights)}"
            )
        self._weights = {task: float(options.weights[task]) for task in self.tasks}

    def loss_weights(self) -> dict[str, float]:
        """The configured weight of each task."""
        return dict(self._weights)


class UncertaintyWeighting(TaskWeighting):
    """``uncertainty``: learned homoscedastic-uncertainty weights.

    Kendall, Gal and Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
    Losses for Scene Geometry and Semantics", CVPR 2018. Each task has a learned
    log-variance ``s_t = log sigma_t^2`` (initialised to 0) and the objective is
    ``sum_t exp(-s_t) L_t + s_t`` (the paper's form with the factor 1/2 folded
    into ``s``), so ``d/ds_t = 1 - exp(-s_t) L_t``: at the optimum
    ``exp(s_t) = L_t``, and a task whose loss stays large (noisy) is
    down-weighted. The ``s_t`` are trained by the client's optimizer and kept in
    its local state (``log-variance/<task>``).
    """

    def __init__(self, tasks: Sequence[str], options: WeightingOptions, seed: int) -> None:
        super().__init__(tasks, options, seed)
        self.log_variances = {
            task: nn.Parameter(torch.zeros((), dtype=torch.float32)) for task in self.tasks
        }

    def parameters(self) -> list[nn.Parameter]:
        """One log-variance per task (tasks' order)."""
        return [self.log_variances[task] for task in self.tasks]

    def objective(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``sum_t exp(-s_t) L_t + s_t``."""
        self._check_losses(losses)
        total: torch.Tensor | None = None
        for task in self.tasks:
            s = self.log_variances[task].to(device=losses[task].device)
            term = torch.exp(-s) * losses[task] + s
            total = term if total is None else total + term
        assert total is not None
        return total

    def loss_weights(self) -> dict[str, float]:
        """``exp(-s_t)`` at the current log-variances."""
        return {task: math.exp(-float(s.detach())) for task, s in self.log_variances.items()}

    def state(self) -> dict[str, npt.NDArray[Any]]:
        """``log-variance/<task>``: each 0-d float32 array."""
        return {
            f"log-variance/{task}": s.detach().cpu().numpy().astype(np.float32).copy()
            for task, s in self.log_variances.items()
        }

    def _load(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        with torch.no_grad():
            for task, s in self.log_variances.items():
                s.copy_(torch.as_tensor(np.asarray(state[f"log-variance/{task}"], np.float32)))


class DynamicWeightAverage(TaskWeighting):
    """``dwa``: Dynamic Weight Average, weights from the loss descent rate.

    Liu, Johns and Davison, "End-to-End Multi-Task Learning with Attention",
    CVPR 2019. For epoch ``e`` with ``K`` tasks and temperature ``T``
    (``dwa-temperature``): ``r_t = L_t(e-1) / L_t(e-2)`` (mean epoch losses) and
    ``w_t = K exp(r_t / T) / sum_i exp(r_i / T)``; a task whose loss falls slower
    gets more weight. With fewer than two epochs of history every weight is 1.
    A zero, negative or non-finite loss gives ratio 1. The last two epochs' mean
    losses (``loss-history/<task>``, 0 to 2 values, oldest first; a non-finite
    loss is kept as 0) are the client's local state, so the history spans rounds.
    """

    _HISTORY = 2

    def __init__(self, tasks: Sequence[str], options: WeightingOptions, seed: int) -> None:
        super().__init__(tasks, options, seed)
        self.history: dict[str, list[float]] = {task: [] for task in self.tasks}
        self._weights = {task: 1.0 for task in self.tasks}

    def loss_weights(self) -> dict[str, float]:
        """The weights of the current epoch (from the history)."""
        return dict(self._weights)

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:
        """Append the epoch's mean losses (keeping two) and recompute the weights."""
        super().end_epoch(mean_losses)
        for task in self.tasks:
            value = float(mean_losses[task])
            kept = self.history[task] + [value if math.isfinite(value) else 0.0]
            self.history[task] = kept[-self._HISTORY :]
        self._weights = self._compute()

    def _compute(self) -> dict[str, float]:
        if len(self.history[self.tasks[0]]) < self._HISTORY:
            return {task: 1.0 for task in self.tasks}
        ratios = []
        for task in self.tasks:
            older, newer = self.history[task]
            ratio = newer / older if older > 0 and newer > 0 else 1.0
            ratios.append(ratio if math.isfinite(ratio) else 1.0)
        scaled = np.asarray(ratios, dtype=np.float64) / self.options.temperature
        exp = np.exp(scaled - scaled.max())
        weights = len(self.tasks) * exp / exp.sum()
        return {task: float(w) for task, w in zip(self.tasks, weights, strict=True)}

    def state(self) -> dict[str, npt.NDArray[Any]]:
        """``loss-history/<task>``: float64 arrays of 0 to 2 mean losses, oldest first."""
        return {
            f"loss-history/{task}": np.asarray(values, dtype=np.float64)
            for task, values in self.history.items()
        }

    def _check_shape(self, key: str, value: npt.NDArray[Any], expected: npt.NDArray[Any]) -> None:
        if value.ndim != 1 or value.shape[0] > self._HISTORY:
            raise ValueError(
                f"DynamicWeightAverage state '{key}' must hold 0 to {self._HISTORY} losses, "
                f"got shape {value.shape}"
            )

    def _load(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        lengths = {np.asarray(array).shape[0] for array in state.values()}
        if len(lengths) != 1:
            raise ValueError("DynamicWeightAverage state: every task needs the same history length")
        self.history = {
            task: [float(v) for v in np.asarray(state[f"loss-history/{task}"])]
            for task in self.tasks
        }
        self._weights = self._compute()


def project_conflicting(grad: torch.Tensor, others: Sequence[torch.Tensor]) -> torch.Tensor:
    """PCGrad's surgery on one flat task gradient, against ``others`` in the given order.

    For each ``g_j`` of ``others``: if ``g . g_j < 0``, ``g -= (g . g_j) / ||g_j||^2 g_j``
    (a zero ``g_j`` never conflicts). Returns a new tensor; ``grad`` is not changed.
    """
    projected = grad
    for original in others:
        if original.shape != grad.shape:
            raise ValueError(
                f"gradient shapes differ: {tuple(original.shape)} != {tuple(grad.shape)}"
            )
        dot = torch.dot(projected, original)
        if dot < 0:
            projected = projected - dot / torch.dot(original, original) * original
    return projected.clone() if projected is grad else projected


class PCGrad(TaskWeighting):
    """``pcgrad``: gradient surgery on the shared parameters.

    Yu, Kumar, Gupta, Levine, Hausman and Finn, "Gradient Surgery for Multi-Task
    Learning", NeurIPS 2020. The objective is the sum of the losses (heads get
    their own task's gradient), but on the shared parameters each task gradient
    ``g_t`` is projected: for every other task ``j``, in a random order, if
    ``g_t' . g_j < 0`` then ``g_t' -= (g_t' . g_j) / ||g_j||^2 g_j`` (``g_j`` the
    original gradient); the shared gradient is ``sum_t g_t'``. Dot products run
    over the concatenation of all shared parameters. The order comes from a
    ``numpy`` Generator seeded with ``seed`` that advances with every call.
    """

    needs_task_gradients: ClassVar[bool] = True

    def __init__(self, tasks: Sequence[str], options: WeightingOptions, seed: int) -> None:
        super().__init__(tasks, options, seed)
        self._rng = np.random.default_rng(seed)

    def combine(
        self, grads: Mapping[str, Sequence[torch.Tensor]], weights: Mapping[str, float]
    ) -> list[torch.Tensor]:
        """The projected task gradients, summed (entry by entry)."""
        scaled = self._scaled(grads, weights)
        template = scaled[self.tasks[0]]
        if not template:
            return []
        flat = {task: _flatten(scaled[task]) for task in self.tasks}
        total = torch.zeros_like(flat[self.tasks[0]])
        for task in self.tasks:
            others = [flat[other] for other in self.tasks if other != task]
            order = self._rng.permutation(len(others))
            total = total + project_conflicting(flat[task], [others[int(i)] for i in order])
        pieces = torch.split(total, [g.numel() for g in template])
        return [piece.reshape(g.shape) for piece, g in zip(pieces, template, strict=True)]


TASK_WEIGHTINGS: Registry[type[TaskWeighting]] = Registry("task weighting")
TASK_WEIGHTINGS.add("equal", TaskWeighting)
TASK_WEIGHTINGS.add("fixed", FixedWeighting)
TASK_WEIGHTINGS.add("uncertainty", UncertaintyWeighting)
TASK_WEIGHTINGS.add("dwa", DynamicWeightAverage)
TASK_WEIGHTINGS.add("pcgrad", PCGrad)


def make_weighting(
    name: str, tasks: Sequence[str], options: WeightingOptions, seed: int
) -> TaskWeighting:
    """The registered weighting ``name`` for a client holding ``tasks``.

    Raises
    ------
    ValueError
        ``name`` is not registered (the message names ``task-weighting`` and the
        registered names), or the weighting refuses the tasks or options.
    """
    try:
        cls = TASK_WEIGHTINGS.get(name)
    except RegistryError as exc:
        raise ValueError(f"task-weighting: {exc}") from None
    return cls(tasks, options, seed)


def gradient_cosine(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Cosine between two gradient lists over their flattened concatenation.

    0.0 when either is all zero; the lists must match in length and shapes, and
    the gradients must be finite.
    """
    _check_pair(a, b)
    x = _flatten(a).detach().to(torch.float64)
    y = _flatten(b).detach().to(torch.float64)
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("gradients for a cosine must be finite")
    norms = float(torch.linalg.vector_norm(x)) * float(torch.linalg.vector_norm(y))
    if norms == 0.0:
        return 0.0
    return max(-1.0, min(1.0, float(torch.dot(x, y)) / norms))


def task_gradient_cosines(
    grads: Mapping[str, Sequence[torch.Tensor]],
) -> dict[tuple[str, str], float]:
    """:func:`gradient_cosine` for every pair of tasks ``(a, b)`` with ``a < b``."""
    names = sorted(grads)
    return {
        (a, b): gradient_cosine(grads[a], grads[b])
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    }
