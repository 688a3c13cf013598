"""The centralized reference: all clients' training data pooled into one multi-task model.

The upper reference of a federated comparison (what sharing the data itself would
give). One model, the run's initial model, trains every non-frozen entry on the
union of the clients' training splits: each task's examples (those of every
client holding it: a several-task client's examples count once per task it
holds) train that task's head, batches hold one task each and are shuffled across tasks, for
``num-rounds x local-epochs`` epochs (each example is seen as often as in the
federation) with the run's optimizer and batch size. Pooled data takes many more
consecutive steps than a client's round does, and the run's learning rate can
diverge there (SGD 0.05 with momentum 0.9 kills the digits backbone within one
epoch), so the reference tries the run's learning rate, 1/5 and 1/25 of it and
keeps the one with the lowest training loss in the last epoch: chosen on
training data only, never on test data. Every client then evaluates this one
model on its own test split of each task it holds, so the per-task statistics are
computed exactly as a federated run's are.

No Flower, no Ray: plain torch on the clients' data, on the run's ``device``
(:func:`fedmtl.run_model.run_device`: CUDA when asked, or when visible with ``auto``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fedmtl.config import ExperimentConfig, partition_spec
from fedmtl.data import ClientData, build_federation
from fedmtl.metrics import summarize_by_task
from fedmtl.models import MultiTaskModel
from fedmtl.run_model import fresh_model, run_device, run_scopes
from fedmtl.training import (
    OPTIMIZERS,
    TrainSettings,
    evaluate,
    gradient_steps,
    trainable_parameters,
)

# The run's learning rate, 1/5 and 1/25 of it (the one with the lowest training loss is kept).
LEARNING_RATE_FACTORS = (1.0, 0.2, 0.04)


def pool_training_data(
    parts: Sequence[ClientData], tasks: Sequence[str]
) -> dict[str, tuple[Any, np.ndarray]]:
    """Each task's training inputs and targets over every client part of that task.

    ``parts`` are all clients' parts (a several-task client gives one per task);
    a task no part trains on is left out.
    """
    pooled: dict[str, tuple[Any, np.ndarray]] = {}
    for task in tasks:
        mine = [part for part in parts if part.task == task and len(part.y_train)]
        if mine:
            pooled[task] = (
                np.concatenate([part.x_train for part in mine]),
                np.concatenate([part.y_train for part in mine]),
            )
    return pooled


def _task_batches(
    cfg: ExperimentConfig, pooled: dict[str, tuple[Any, np.ndarray]], generator: torch.Generator
) -> list[tuple[str, torch.Tensor]]:
    """One epoch's batches: each task's examples shuffled and cut, then all batches shuffled."""
    batches = []
    for task in sorted(pooled):
        n = len(pooled[task][1])
        order = torch.randperm(n, generator=generator)
        batches += [(task, part) for part in torch.split(order, cfg.batch_size) if len(part) > 1]
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def _fit(
    cfg: ExperimentConfig,
    pooled: dict[str, tuple[Any, np.ndarray]],
    learning_rate: float,
    device: torch.device,
) -> tuple[MultiTaskModel, float]:
    """Train a fresh model on the pooled data; return it and its last epoch's mean loss."""
    torch.manual_seed(cfg.seed)
    model = fresh_model(cfg).to(device)
    scopes = run_scopes(cfg)
    trainable = {name for name, _ in model.named_parameters() if scopes.get(name) != "frozen"}
    params = trainable_parameters(model, trainable)
    settings = TrainSettings(
        batch_size=cfg.batch_size,
        learning_rate=learning_rate,
        optimizer=cfg.optimizer,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
    )
    optimizer = OPTIMIZERS.get(cfg.optimizer)(params, settings)
    generator = torch.Generator().manual_seed(cfg.seed)
    tasks = partition_spec(cfg).dataset_spec().tasks

    def loss(batch: tuple[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        task, rows = batch
        x, y = pooled[task]
        inputs = model.backbone.prepare(x[rows.numpy()], device)
        objective = tasks[task].objective  # the task kind's loss on its targets
        targets = objective.targets(y[rows.numpy()]).to(device)
        return objective.kind.loss(model(inputs, task), targets, "mean"), len(rows)

    last_epoch = float("nan")
    for _ in range(cfg.num_rounds * cfg.local_epochs):
        total, count = 0.0, 0
        for value, size in gradient_steps(optimizer, _task_batches(cfg, pooled, generator), loss):
            total += value * size
            count += size
        last_epoch = total / max(count, 1)
    return model, last_epoch


def train_centralized(cfg: ExperimentConfig) -> dict[str, Any]:
    """Train the pooled multi-task model; return per-client rows and per-task statistics.

    Returns
    -------
    dict
        ``clients``: one row per client and task it holds (``client-id``, ``task``,
        ``accuracy``, ``loss``, ``num-examples``) on its own test split; ``tasks``: their
        per-task summary (:func:`fedmtl.metrics.summarize_by_task`); ``epochs``;
        ``learning-rate`` (the one kept) and ``train-loss`` per learning rate tried.
    """
    clients = [part for parts in build_federation(partition_spec(cfg)) for part in parts]
    pooled = pool_training_data(clients, cfg.tasks)
    device = run_device(cfg)  # `device`: cuda when asked (or visible, auto)
    tried: dict[float, float] = {}
    best: tuple[float, MultiTaskModel, float] | None = None
    for learning_rate in LEARNING_RATE_FACTORS:
        lr = cfg.learning_rate * learning_rate
        model, loss = _fit(cfg, pooled, lr, device)
        tried[lr] = loss
        if math.isfinite(loss) and (best is None or loss < best[0]):
            best = (loss, model, lr)
    if best is None:
        raise RuntimeError(f"centralized training diverged at every learning rate: {tried}")
    _, model, chosen = best
    rows = []
    for client in clients:
        objective = partition_spec(cfg).dataset_spec().tasks[client.task].objective
        result = evaluate(
            model, client.task, client.x_test, client.y_test, device, objective=objective
        )
        rows.append({"client-id": client.client_id, "task": client.task, **result})
    # Frozen tensors are shared with the process's initial model (fresh_model): back to
    # the CPU, where the server's initial arrays and later runs in this process expect them.
    model.cpu()
    return {
        "clients": rows,
        "tasks": summarize_by_task(rows),
        "epochs": cfg.num_rounds * cfg.local_epochs,
        "learning-rate": chosen,
        "train-loss": {str(lr): loss for lr, loss in tried.items()},
    }
