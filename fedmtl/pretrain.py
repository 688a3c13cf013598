"""Pretrain a backbone on a dataset's held-out source split (no client ever sees it).

``fedmtl pretrain`` writes the checkpoint that the default experiment starts
from; it is loaded through the same code path as any user checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fedmtl.data import get_dataset_spec
from fedmtl.models import build_model
from fedmtl.models.backbones import builtin_checkpoint
from fedmtl.training import TrainSettings, evaluate, train_local


def pretrain_backbone(
    dataset: str = "digits",
    backbone: str = "digits-cnn",
    task: str = "digit",
    epochs: int = 30,
    seed: int = 0,
    out: Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Train ``backbone`` with a ``task`` head on the source split and save the backbone.

    80% of the source split trains, 20% measures; the result goes into the
    checkpoint's metadata. Returns the checkpoint path and that metadata.
    """
    spec = get_dataset_spec(dataset)
    if spec.load is None:
        raise ValueError(f"dataset '{dataset}' has per-task inputs; pretrain needs shared inputs")
    base = spec.load()
    source, pool = spec.source_split(len(base.y))
    generator = torch.Generator().manual_seed(seed)
    order = source[torch.randperm(len(source), generator=generator).numpy()]
    cut = int(0.8 * len(order))
    train_idx, val_idx = order[:cut], order[cut:]
    label_fn = spec.tasks[task].label_fn
    # The source head gets its own name (and so its own seed): the heads that clients
    # start from must not be the one the backbone was pretrained with.
    head = f"source-{task}"
    model = build_model(backbone, {head: spec.tasks[task].num_outputs}, "none", seed)
    settings = TrainSettings(
        epochs=epochs, batch_size=32, learning_rate=1e-3, optimizer="adam", seed=seed
    )
    trainable = {name for name, _ in model.named_parameters()}
    train_local(model, head, base.x[train_idx], label_fn(base.y[train_idx]), settings, trainable)
    result = evaluate(model, head, base.x[val_idx], label_fn(base.y[val_idx]))
    meta = {
        "dataset": dataset,
        "backbone": backbone,
        "task": task,
        "epochs": epochs,
        "seed": seed,
        "source-examples": len(source),
        "client-pool-examples": len(pool),
        "source-val-accuracy": round(result["accuracy"], 4),
        "feature-dim": model.backbone.feature_dim,
    }
    target = out or builtin_checkpoint(backbone)
    target.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, target)
    return target, meta
