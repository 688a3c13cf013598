"""Plain-torch local training and evaluation (no Flower types).

:func:`train_local` trains one task's head (and whatever else is trainable) on
a client's data; :func:`gradient_steps` is the loop every trainer here shares
(also the centralized reference); :data:`OPTIMIZERS` maps optimizer names to
factories; :func:`evaluate` measures a head. The task's kind
(:class:`fedmtl.task_kinds.TaskObjective`, default classification) gives the
loss and the metrics; nothing here branches on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy.typing as npt
import torch
from torch import nn

from fedmtl.models import MultiTaskModel
from fedmtl.registry import Registry
from fedmtl.task_kinds import CLASSIFICATION, TaskObjective

B = TypeVar("B")


@dataclass(frozen=True)
class TrainSettings:
    """Local optimisation settings for one round."""

    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    proximal_mu: float = 0.0
    seed: int = 0


def client_seed(run_seed: int, server_round: int, client_id: int) -> int:
    """The seed of one client's local work in one round (distinct per run, round and client)."""
    return run_seed * 100_003 + server_round * 1009 + client_id


OptimizerFactory = Callable[[list[nn.Parameter], TrainSettings], torch.optim.Optimizer]
#: Optimizer name (``optimizer`` in the experiment) -> factory over the parameters to train.
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def _sgd(params: list[nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params,
        lr=settings.learning_rate,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )


@OPTIMIZERS.register("adam")
def _adam(params: list[nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)


def pick_device(preference: str = "auto") -> torch.device:
    """``cuda`` when asked for or visible (``auto``), else ``cpu``."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device = 'cuda' but no CUDA device is visible to this process")
        return torch.device("cuda")
    return torch.device("cpu")


def batch_order(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    """Index batches over ``n`` examples: a seeded permutation (no generator: in order)."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(torch.split(order, batch_size))


def batch_logits(
    model: MultiTaskModel,
    task: str,
    x: npt.NDArray[Any],
    features: torch.Tensor | None,
    batch: torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    """Logits of one batch, from cached backbone features when given."""
    if features is not None:
        return model.head_logits(features[batch].to(device), task)
    logits: torch.Tensor = model(model.backbone.prepare(x[batch.numpy()], device), task)
    return logits


def _all_in_mode(module: nn.Module, training: bool) -> bool:
    """Whether ``module`` and all its submodules are in mode ``training`` (a plain walk)."""
    stack = [module]
    while stack:
        current = stack.pop()
        if current.training != training:
            return False
        stack.extend(child for child in current._modules.values() if child is not None)
    return True


def set_mode(module: nn.Module, training: bool) -> None:
    """``module.train(training)``, skipping subtrees already in that mode.

    The same end state and the same ``train`` overrides called where a mode
    changes; a frozen transformer already in eval mode is not walked through
    ``train`` on every message (a tenth of a frozen-MiniLM client's work).
    """
    if _all_in_mode(module, training):
        return
    if type(module).train is not nn.Module.train:  # an override sees its whole subtree
        module.train(training)
        return
    module.training = training  # what nn.Module.train does, child by child
    for child in module.children():
        set_mode(child, training)


def _train_modes(module: nn.Module, prefix: str, params: list[tuple[str, nn.Parameter]]) -> None:
    """Train mode, but every submodule whose parameters are all frozen in eval mode.

    A frozen layer must compute what it computed when pretrained: no dropout,
    and batch-norm statistics neither used per batch nor updated. Equivalent to
    ``module.train()`` and then ``eval()`` on the first all-frozen module of
    each branch, without walking the subtrees that already are in their mode.
    ``params`` are ``module``'s ``(name, parameter)`` pairs as the whole model
    names them (shared ones under each name), ``prefix`` its own name and ``"."``.
    """
    if params and not any(p.requires_grad for _, p in params):
        set_mode(module, False)
        return
    if not params or type(module).train is not nn.Module.train:
        set_mode(module, True)
        if not params:
            return
    module.training = True
    for name, child in module.named_children():
        inner = f"{prefix}{name}."
        _train_modes(child, inner, [(n, p) for n, p in params if n.startswith(inner)])


def trainable_parameters(model: nn.Module, trainable: set[str]) -> list[nn.Parameter]:
    """Unfreeze exactly ``trainable`` (train mode, frozen layers in eval mode); return them."""
    params = []
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
        if name in trainable:
            params.append(param)
    _train_modes(model, "", list(model.named_parameters(remove_duplicate=False)))
    return params


def gradient_steps(
    optimizer: torch.optim.Optimizer,
    batches: Iterable[B],
    loss: Callable[[B], tuple[torch.Tensor, int]],
    penalty: Callable[[], torch.Tensor] | None = None,
) -> list[tuple[float, int]]:
    """One optimizer step per batch on its loss (+ ``penalty()``, if any).

    ``loss(batch)`` gives the batch's mean data loss and its number of examples.
    Returns both for every batch, in order (the loss without the penalty), so
    callers average them over an epoch or over all epochs.
    """
    seen = []
    for batch in batches:
        optimizer.zero_grad()
        value, size = loss(batch)
        objective = value if penalty is None else value + penalty()
        torch.autograd.backward(objective)
        optimizer.step()
        seen.append((float(value.detach()), size))
    return seen


def train_local(
    model: MultiTaskModel,
    task: str,
    x: npt.NDArray[Any],
    y: npt.NDArray[Any],
    settings: TrainSettings,
    trainable: set[str],
    proximal_reference: Mapping[str, torch.Tensor] | None = None,
    device: torch.device | None = None,
    features: torch.Tensor | None = None,
    objective: TaskObjective = CLASSIFICATION,
) -> dict[str, float]:
    """Train ``model`` on one task's data in place; return mean loss and example count.

    Parameters
    ----------
    model : MultiTaskModel
        The model to train (moved to ``device``).
    task : str
        Which head to train.
    x, y : numpy arrays
        Local inputs and task targets (labels, or a regression's raw values).
    settings : TrainSettings
        Optimiser (a name in :data:`OPTIMIZERS`), epochs, batch size, seed.
    trainable : set of str
        Parameter names that may change (shared, task and local scopes); the rest
        are frozen (``requires_grad=False``).
    proximal_reference : mapping, optional
        Weights received from the server; with ``settings.proximal_mu > 0`` the loss
        gains ``mu / 2 * ||w - w_ref||^2`` over them (FedProx).
    device : torch.device, optional
        Where to train (default CPU).
    features : torch.Tensor, optional
        Precomputed backbone features of ``x`` (frozen backbone only): the
        backbone is skipped and only the heads see data.
    objective : TaskObjective
        The task's kind (its loss) and target scale; default classification.
    """
    device = device or torch.device("cpu")
    # With cached features the backbone is not run: leave it where it is.
    (model.heads if features is not None else model).to(device)
    params = trainable_parameters(model, trainable)
    if not params or settings.epochs == 0 or len(y) == 0:
        return {"loss": float("nan") if len(y) == 0 else 0.0, "num-examples": len(y)}
    optimizer = OPTIMIZERS.get(settings.optimizer)(params, settings)
    named: dict[str, nn.Parameter] = {}
    reference = {}
    if settings.proximal_mu > 0 and proximal_reference:
        named = dict(model.named_parameters())  # a walk of the whole model: only when needed
        reference = {k: v.detach().to(device) for k, v in proximal_reference.items() if k in named}
    ys = objective.targets(y).to(device)
    torch.manual_seed(settings.seed)  # dropout and other global draws: same in every worker
    generator = torch.Generator().manual_seed(settings.seed)

    def loss(batch: torch.Tensor) -> tuple[torch.Tensor, int]:
        logits = batch_logits(model, task, x, features, batch, device)
        return objective.kind.loss(logits, ys[batch], "mean"), len(batch)

    def proximal() -> torch.Tensor:
        terms = [((named[k] - ref) ** 2).sum() for k, ref in reference.items()]
        return settings.proximal_mu / 2 * sum(terms[1:], terms[0])

    penalty = proximal if reference else None
    total, count = 0.0, 0
    for _ in range(settings.epochs):
        # batch norm cannot train on a single example
        batches = [
            batch
            for batch in batch_order(len(ys), settings.batch_size, generator)
            if len(batch) >= 2 or len(ys) < 2
        ]
        for value, size in gradient_steps(optimizer, batches, loss, penalty):
            total += value * size
            count += size
    return {"loss": total / max(count, 1), "num-examples": len(y)}


@torch.no_grad()
def evaluate(
    model: MultiTaskModel,
    task: str,
    x: npt.NDArray[Any],
    y: npt.NDArray[Any],
    device: torch.device | None = None,
    batch_size: int = 256,
    features: torch.Tensor | None = None,
    objective: TaskObjective = CLASSIFICATION,
) -> dict[str, float]:
    """Mean loss and the kind's metrics of ``task``'s head on ``(x, y)``.

    ``objective`` (default classification: cross-entropy, accuracy, macro-F1)
    gives the loss and the metrics (see :mod:`fedmtl.task_kinds`); the metrics
    are computed over the whole split. With ``features`` (precomputed backbone
    features of ``x``) only the head runs. Returns ``loss``, the metrics, then
    ``num-examples``.
    """
    device = device or torch.device("cpu")
    (model.heads if features is not None else model).to(device)
    set_mode(model, False)
    ys = objective.targets(y)
    loss_sum, outputs = 0.0, []
    for batch in batch_order(len(y), batch_size, None):
        targets = ys[batch].to(device)
        logits = batch_logits(model, task, x, features, batch, device)
        loss_sum += float(objective.kind.loss(logits, targets, "sum"))
        outputs.append(logits.cpu())
    n = max(len(y), 1)
    scores = objective.scores(torch.cat(outputs) if outputs else torch.empty(0, 0), ys)
    return {"loss": loss_sum / n, **scores, "num-examples": len(y)}
