"""Conflict-averse aggregation of the shared encoder (CAGrad over per-task mean updates).

When tasks pull a shared encoder in conflicting directions, the plain average
update can hurt some task. Following FedHCA2 (Lu et al., "FedHCA2: Towards
Hetero-Client Federated Multi-Task Learning", CVPR 2024), which aggregates
encoders with a conflict-averse solve, this strategy:

1. computes each task's mean update ``g_t`` (clients of task ``t`` weighted by
   ``num-examples``, minus the current global weights) over the float arrays of
   the shared scope;
2. combines them as CAGrad does (Liu et al., "Conflict-Averse Gradient Descent
   for Multi-task Learning", NeurIPS 2021): with ``g0`` the mean of the ``g_t``
   and ``G`` their Gram matrix, find simplex weights ``w`` minimising
   ``w^T G 1/T + c sqrt(w^T G w)`` where ``c = alpha * ||g0||``; with
   ``gw = sum_t w_t g_t`` the update is ``(g0 + c / ||gw|| * gw) / (1 + alpha^2)``;
3. applies it with a server learning rate: ``global + server_lr * update``.

With one task (or no conflict to resolve) nothing is solved and the result is
FedAvg's. Non-float arrays (counters) are averaged as FedAvg does.

A client holding ``k`` tasks counts in the mean update of each of its tasks,
with its examples split equally (weight ``n_i / k`` in each): its one shared
update is its contribution to every task it trains (a stock reply carries only
the total ``num-examples``). A client holding one task has weight ``n_i``.

Wire keys: reads the shared ``"arrays"``, ``"metrics"`` (``num-examples``) and
the ``"client"`` ConfigRecord (``task``, ``tasks``) that ``ScopedStrategy``
keeps in each reply; sends what FedAvg sends. Client side: nothing beyond plain training.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from scipy.optimize import minimize

from fedmtl.records import (
    ARRAYS,
    ClientInfo,
    from_record,
    reply_examples,
    to_record,
)
from strategies.registry import register

Vector = npt.NDArray[np.float64]


def cagrad_direction(task_updates: Vector, alpha: float = 0.4) -> Vector:
    """CAGrad's combined update of ``task_updates`` (shape ``(T, D)``), rescaled by ``1 + a^2``.

    Parameters
    ----------
    task_updates : array of shape (T, D)
        One mean update per task.
    alpha : float
        Conflict aversion ``c``'s scale; 0 gives the plain mean.
    """
    num_tasks = task_updates.shape[0]
    mean: Vector = np.asarray(task_updates.mean(axis=0), dtype=np.float64)
    gram = task_updates @ task_updates.T
    mean_norm = float(np.sqrt(max(gram.mean(), 0.0)))
    if num_tasks == 1 or alpha == 0.0 or mean_norm == 0.0:
        return mean
    c = alpha * mean_norm
    uniform = np.full(num_tasks, 1.0 / num_tasks)

    def objective(w: Vector) -> float:
        return float(w @ gram @ uniform + c * np.sqrt(max(float(w @ gram @ w), 0.0) + 1e-12))

    result = minimize(
        objective,
        uniform,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * num_tasks,
        constraints=({"type": "eq", "fun": lambda w: 1.0 - float(np.sum(w))},),
    )
    weights = np.clip(result.x, 0.0, None)
    combined = weights @ task_updates
    combined_norm = float(np.linalg.norm(combined))
    if combined_norm == 0.0:
        return mean
    return (mean + c / combined_norm * combined) / (1.0 + alpha**2)  # type: ignore[no-any-return]


@register("conflict-averse")
class ConflictAverseFedAvg(FedAvg):
    """CAGrad-style aggregation of per-task mean updates (see module docstring).

    Parameters
    ----------
    alpha : float
        CAGrad's ``c`` scale (0.4 as in the paper; 0 gives the mean of task updates).
    server_lr : float
        Step applied to the combined update.
    **kwargs
        FedAvg's sampling arguments.
    """

    conformance_traits = ("task-aware",)

    def __init__(self, alpha: float = 0.4, server_lr: float = 1.0, **kwargs: Any) -> None:
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        super().__init__(**kwargs)
        self.alpha = alpha
        self.server_lr = server_lr
        self.current: dict[str, npt.NDArray[Any]] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global arrays the round starts from, then sample as FedAvg."""
        self.current = from_record(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg for metrics and counters; CAGrad over per-task updates for float arrays."""
        replies = list(replies)
        averaged, metrics = super().aggregate_train(server_round, replies)
        valid = [r for r in replies if not r.has_error()]
        if averaged is None or not self.current or not valid:
            return averaged, metrics
        result = from_record(averaged)
        keys = [k for k, v in self.current.items() if np.issubdtype(v.dtype, np.floating)]
        updates = _task_mean_updates(valid, self.current, keys)
        if len(updates) < 2:
            return averaged, metrics
        flat = np.stack([updates[t] for t in sorted(updates)])
        step = self.server_lr * cagrad_direction(flat, self.alpha)
        offset = 0
        for key in keys:
            size = self.current[key].size
            delta = step[offset : offset + size].reshape(self.current[key].shape)
            result[key] = (self.current[key] + delta).astype(self.current[key].dtype)
            offset += size
        return to_record(result), metrics


def _task_mean_updates(
    replies: list[Message], current: dict[str, npt.NDArray[Any]], keys: list[str]
) -> dict[str, Vector]:
    """Per task: the sample-weighted mean of (client arrays - current), flattened.

    A client holding ``k`` tasks is in each of its tasks' means with weight ``n / k``.
    """
    sums: dict[str, Vector] = {}
    totals: dict[str, float] = defaultdict(float)
    base = np.concatenate([current[k].ravel().astype(np.float64) for k in keys])
    for reply in replies:
        tasks = ClientInfo.from_content(reply.content).tasks
        weight = reply_examples(reply.content) / len(tasks)
        arrays = from_record(reply.content.array_records[ARRAYS])
        flat = np.concatenate([arrays[k].ravel().astype(np.float64) for k in keys])
        for task in tasks:
            sums[task] = sums.get(task, np.zeros_like(base)) + weight * (flat - base)
            totals[task] += weight
    return {t: sums[t] / totals[t] for t in sums if totals[t] > 0}
