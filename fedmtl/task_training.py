"""Joint local training of every task a client holds, in one step on the shared representation.

Each step draws one batch per task, computes every task's loss through the
same model, and updates all trainable parameters once. The task weighting
(:mod:`fedmtl.task_weighting`) decides how the task losses combine: its
objective trains the heads (and its own parameters, e.g. uncertainty
weighting's log-variances); the shared parameters (every trainable one outside
the heads) get its combination of the tasks' own gradients, which is where
gradient surgery (PCGrad) acts. Both are divided by the number of tasks the
client holds: the weightings are defined as sums (as in their papers), and a
sum over T tasks would train the shared layers at T times the learning rate,
so a client holding more tasks would not be comparable with one holding one
(``equal`` is the mean of the task losses). Those per-task gradients also give the round's
interference diagnostic: the mean cosine between each pair of tasks'
gradients on the shared parameters.

A client holding one task with the ``equal`` weighting trains exactly as
:func:`fedmtl.training.train_local` (the same operations, bit for bit).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedmtl.models import MultiTaskModel
from fedmtl.task_kinds import CLASSIFICATION, TaskObjective
from fedmtl.task_weighting import TaskWeighting, WeightingOptions, task_gradient_cosines
from fedmtl.training import (
    OPTIMIZERS,
    TrainSettings,
    batch_logits,
    batch_order,
    train_local,
    trainable_parameters,
)


@dataclass(frozen=True)
class TaskInputs:
    """One task's training data on a client.

    ``features``: precomputed backbone features of ``x`` (frozen backbone only).
    """

    task: str
    x: npt.NDArray[Any]
    y: npt.NDArray[Any]
    objective: TaskObjective = CLASSIFICATION
    features: torch.Tensor | None = None


@dataclass(frozen=True)
class JointResult:
    """What a joint training call measured.

    ``tasks``: each task's mean training loss and example count; ``cosines``:
    the mean cosine of each task pair's shared-parameter gradients (pairs
    ``(a, b)`` with ``a < b``; empty for one task or nothing shared).
    """

    tasks: dict[str, dict[str, float]]
    cosines: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def loss(self) -> float:
        """The example-weighted mean of the tasks' losses."""
        total = sum(m["num-examples"] for m in self.tasks.values())
        if total == 0:
            return next(iter(self.tasks.values()))["loss"]
        return sum(m["loss"] * m["num-examples"] for m in self.tasks.values()) / total

    @property
    def num_examples(self) -> int:
        """Training examples over all tasks."""
        return int(sum(m["num-examples"] for m in self.tasks.values()))


def _is_plain(weighting: TaskWeighting | None) -> bool:
    """Whether ``weighting`` is the ``equal`` one (or none): one task then trains the plain way."""
    return weighting is None or type(weighting) is TaskWeighting


def train_tasks(
    model: MultiTaskModel,
    parts: Sequence[TaskInputs],
    settings: TrainSettings,
    trainable: set[str],
    weighting: TaskWeighting | None = None,
    proximal_reference: Mapping[str, torch.Tensor] | None = None,
    device: torch.device | None = None,
) -> JointResult:
    """Train ``model`` on every task of ``parts`` at once, in place.

    Parameters
    ----------
    model : MultiTaskModel
        The model to train (moved to ``device``).
    parts : sequence of TaskInputs
        One entry per task the client holds (distinct tasks).
    settings : TrainSettings
        Optimiser, epochs, batch size, seed. Every task's batches are drawn
        from a generator seeded with ``settings.seed``, so tasks of equal size
        (one input, several labels) see the same batches.
    trainable : set of str
        Parameter names that may change; the rest are frozen.
    weighting : TaskWeighting, optional
        How task losses combine (default: ``equal``, their sum).
    proximal_reference : mapping, optional
        FedProx's anchor, as in :func:`fedmtl.training.train_local`.
    device : torch.device, optional
        Where to train (default CPU).
    """
    if not parts or len({p.task for p in parts}) != len(parts):
        raise ValueError(f"train_tasks needs distinct tasks, got {[p.task for p in parts]}")
    if len(parts) == 1 and _is_plain(weighting):
        part = parts[0]
        result = train_local(
            model, part.task, part.x, part.y, settings, trainable, proximal_reference, device,
            features=part.features, objective=part.objective,
        )  # fmt: skip
        return JointResult({part.task: result})
    return _JointTrainer(model, parts, settings, trainable, device).run(
        weighting or TaskWeighting([p.task for p in parts], WeightingOptions(), settings.seed),
        proximal_reference,
    )


class _TaskBatches:
    """Endless seeded batches of one task: a fresh permutation each time one is used up."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.pending: list[torch.Tensor] = []

    def epoch(self) -> list[torch.Tensor]:
        """One pass over the task's examples (batch norm cannot train on a single example)."""
        return [
            b
            for b in batch_order(self.n, self.batch_size, self.generator)
            if len(b) >= 2 or self.n < 2
        ]

    def next(self) -> torch.Tensor:
        if not self.pending:
            self.pending = self.epoch()
        return self.pending.pop(0)


class _JointTrainer:
    """One joint training call (see :func:`train_tasks`)."""

    def __init__(
        self,
        model: MultiTaskModel,
        parts: Sequence[TaskInputs],
        settings: TrainSettings,
        trainable: set[str],
        device: torch.device | None,
    ) -> None:
        self.model, self.parts, self.settings = model, list(parts), settings
        self.device = device or torch.device("cpu")
        cached = all(p.features is not None for p in parts)
        (model.heads if cached else model).to(self.device)
        self.params = trainable_parameters(model, trainable)
        names = {id(p): n for n, p in model.named_parameters()}
        # Shared on this client: every trainable parameter no single task's head owns.
        self.shared = [p for p in self.params if not names[id(p)].startswith("heads.")]
        self.targets = {p.task: p.objective.targets(p.y).to(self.device) for p in parts}
        # Tasks with equal inputs (one input, several labels) share a backbone pass per batch.
        self.input_of: dict[str, str] = {}
        for part in parts:
            same = (o.task for o in parts if o.task in self.input_of and _same_inputs(o.x, part.x))
            self.input_of[part.task] = next(same, part.task)

    def run(
        self, weighting: TaskWeighting, reference: Mapping[str, torch.Tensor] | None
    ) -> JointResult:
        sizes = {p.task: len(p.y) for p in self.parts}
        settings = self.settings
        if not self.params or settings.epochs == 0 or not any(sizes.values()):
            return JointResult(
                {t: {"loss": float("nan") if n == 0 else 0.0, "num-examples": n}
                 for t, n in sizes.items()}
            )  # fmt: skip
        optimizer = OPTIMIZERS.get(settings.optimizer)(
            self.params + weighting.parameters(), settings
        )
        penalty = self._proximal(reference)
        torch.manual_seed(settings.seed)  # dropout and other global draws: same in every worker
        streams = {
            p.task: _TaskBatches(len(p.y), settings.batch_size, settings.seed)
            for p in self.parts
            if len(p.y)
        }
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        cosine_sums: dict[tuple[str, str], float] = defaultdict(float)
        cosine_steps = 0
        for _ in range(settings.epochs):
            epoch_sums: dict[str, float] = defaultdict(float)
            epoch_counts: dict[str, int] = defaultdict(int)
            epochs = {t: s.epoch() for t, s in streams.items()}
            steps = max(len(b) for b in epochs.values())
            for step in range(steps):
                batch = {
                    t: epochs[t][step] if step < len(epochs[t]) else streams[t].next()
                    for t in streams
                }
                losses = self._losses(batch)
                cosines = self._step(optimizer, weighting, losses, penalty)
                if cosines is not None:
                    cosine_steps += 1
                    for pair, value in cosines.items():
                        cosine_sums[pair] += value
                for task, loss in losses.items():
                    value, size = float(loss.detach()), len(batch[task])
                    epoch_sums[task] += value * size
                    epoch_counts[task] += size
            weighting.end_epoch({t: epoch_sums[t] / max(epoch_counts[t], 1) for t in epoch_sums})
            for task in epoch_sums:
                sums[task] += epoch_sums[task]
                counts[task] += epoch_counts[task]
        tasks = {
            t: {"loss": sums[t] / max(counts[t], 1) if n else float("nan"), "num-examples": n}
            for t, n in sizes.items()
        }
        cosines = (
            {pair: s / cosine_steps for pair, s in cosine_sums.items()} if cosine_steps else {}
        )
        return JointResult(tasks, cosines)

    def _losses(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each task's mean loss on its batch; one backbone pass for tasks sharing inputs."""
        passes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        losses = {}
        for part in self.parts:
            if part.task not in batch:
                continue
            rows = batch[part.task]
            source = self.input_of[part.task]
            if part.features is not None:
                logits = batch_logits(
                    self.model, part.task, part.x, part.features, rows, self.device
                )
            else:
                if source not in passes or not torch.equal(passes[source][0], rows):
                    prepared = self.model.backbone.prepare(part.x[rows.numpy()], self.device)
                    passes[source] = (rows, self.model.backbone(prepared))
                logits = self.model.head_logits(passes[source][1], part.task)
            target = self.targets[part.task][rows]
            losses[part.task] = part.objective.kind.loss(logits, target, "mean")
        return losses

    def _step(
        self,
        optimizer: torch.optim.Optimizer,
        weighting: TaskWeighting,
        losses: dict[str, torch.Tensor],
        penalty: Callable[[], torch.Tensor] | None,
    ) -> dict[tuple[str, str], float] | None:
        """One optimizer step; the step's task-gradient cosines (None: nothing shared)."""
        optimizer.zero_grad()
        scale = 1.0 / len(losses)  # the mean over the client's tasks, not their sum
        extra = penalty() if penalty is not None else None
        shared_grad: list[torch.Tensor] | None = None
        cosines = None
        if self.shared:
            grads = {task: _grads(loss, self.shared) for task, loss in losses.items()}
            cosines = task_gradient_cosines(grads) if len(grads) > 1 else None
            combined = weighting.combine(grads, weighting.shared_weights(losses))
            shared_grad = [g * scale for g in combined]
            if extra is not None:
                shared_grad = [
                    g + p for g, p in zip(shared_grad, _grads(extra, self.shared), strict=True)
                ]
        objective = weighting.objective(losses) * scale
        if extra is not None:
            objective = objective + extra
        rest = [p for p in self.params + weighting.parameters() if not _in(p, self.shared)]
        if rest:
            torch.autograd.backward(objective, inputs=rest)
        if shared_grad is not None:
            for param, grad in zip(self.shared, shared_grad, strict=True):
                param.grad = grad.detach().clone()
        optimizer.step()
        return cosines

    def _proximal(
        self, reference: Mapping[str, torch.Tensor] | None
    ) -> Callable[[], torch.Tensor] | None:
        if self.settings.proximal_mu <= 0 or not reference:
            return None
        named = dict(self.model.named_parameters())
        anchors = {k: v.detach().to(self.device) for k, v in reference.items() if k in named}
        if not anchors:
            return None
        mu = self.settings.proximal_mu

        def proximal() -> torch.Tensor:
            terms = [((named[k] - ref) ** 2).sum() for k, ref in anchors.items()]
            return mu / 2 * sum(terms[1:], terms[0])

        return proximal


def _in(param: nn.Parameter, group: Sequence[nn.Parameter]) -> bool:
    return any(param is other for other in group)


def _grads(value: torch.Tensor, params: Sequence[nn.Parameter]) -> list[torch.Tensor]:
    """D value / d params (zeros where a parameter does not reach ``value``); graph kept."""
    found = torch.autograd.grad(value, list(params), retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(found, params, strict=True)]


def _same_inputs(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> bool:
    if a is b:
        return True
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))
