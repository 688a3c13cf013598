"""Example-level differential privacy for local training (DP-SGD with Opacus; no Flower types).

With ``dp-sgd = true`` every local fit of a client trains through
:func:`private_train_local` instead of :func:`fedmtl.training.train_local`:

* batches are drawn by **Poisson sampling** (Opacus ``DPDataLoader`` over the
  example indices: each example joins each step with probability
  ``q = 1 / ceil(n / batch-size)``; batches vary in size and may be empty);
* each example's gradient (Opacus ``GradSampleModule``) is **clipped** to
  ``dp-sgd-max-grad-norm``, the clipped gradients are summed, **Gaussian noise**
  of standard deviation ``dp-sgd-noise-multiplier * dp-sgd-max-grad-norm`` is
  added, and the sum is divided by the expected batch size ``q * n`` (Opacus
  ``DPOptimizer``) before the run's optimizer steps;
* FedProx's proximal term (data independent) is added to the noised gradient.

The sampling and the noise draw from a generator seeded from the operating
system (``secrets``), not from the run's seed (unless ``dp-seeded-noise``, for
experiments): the server knows the run's seed, and noise it could regenerate
would protect nothing. Without ``dp-seeded-noise``, DP-SGD runs are
therefore not bit-reproducible.

**What is accounted.** Each fit adds ``(noise multiplier, q, steps)`` to the
client's :class:`PrivacyLedger`, which the ClientApp keeps in the client's
state (group :data:`DP_SGD_STATE`, never sent), so ε composes over every round
(and every fit within a round: FedRep's two phases, Ditto's personal model)
the client trained in. ε for ``dp-sgd-delta`` is Opacus's accountant
(``rdp`` or ``prv``) over that history: it bounds what the **trained
parameters** (the replies' arrays, the local scope) reveal about any one
training example of the client. Not covered: the reply's metrics (train loss,
example counts, evaluation metrics), and evaluation-time fine-tuning on the
train split (refused).

**Frozen features.** With a frozen backbone the head trains on cached backbone
features (:mod:`fedmtl.features`). The backbone is public (pretrained) and never
trains, so its features are a fixed function of each private example; they
stay on the device, and DP-SGD clips each example's gradient on them exactly as
on raw inputs (per-sample gradients of the head).

Opacus is imported only when DP-SGD trains (``pip install 'fedmtl[dpsgd]'``).
"""

from __future__ import annotations

import importlib
import math
import secrets
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedmtl.models import MultiTaskModel
from fedmtl.task_kinds import CLASSIFICATION, TaskObjective
from fedmtl.training import OPTIMIZERS, TrainSettings, batch_logits, trainable_parameters

#: State group of a client's accountant history (kept on the client, never sent).
DP_SGD_STATE = "fedmtl-dp-sgd"
#: Opacus accountants ``dp-sgd-accountant`` may name.
ACCOUNTANTS = ("rdp", "prv")
#: The optional dependency group that installs Opacus.
EXTRA = "dpsgd"

#: One accountant entry: (noise multiplier, sample rate, steps).
Step = tuple[float, float, int]


class DpSgdError(ValueError):
    """A model or combination DP-SGD cannot train honestly."""


def opacus() -> ModuleType:
    """The ``opacus`` package, or an ImportError naming the extra that installs it."""
    try:
        return importlib.import_module("opacus")
    except ImportError:
        raise ImportError(
            f"dp-sgd = true needs Opacus: pip install 'fedmtl[{EXTRA}]' (or opacus>=1.5)"
        ) from None


@dataclass(frozen=True)
class DpSgdSettings:
    """DP-SGD's parameters (``dp-sgd-*`` keys)."""

    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    accountant: str = "rdp"
    # `dp-seeded-noise`: sampling and noise from the run's seed (reproducible, not secret)
    seeded: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ValueError(
                f"noise multiplier must be finite and >= 0, got {self.noise_multiplier}"
            )
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"max grad norm must be finite and > 0, got {self.max_grad_norm}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant '{self.accountant}' not in {list(ACCOUNTANTS)}")


def epsilon(history: Sequence[Step], delta: float, accountant: str = "rdp") -> float:
    """ε for ``delta`` of ``history`` by Opacus's ``accountant`` (no step: 0; no noise: inf)."""
    steps = [tuple(entry) for entry in history if entry[2] > 0]
    if not steps:
        return 0.0
    if any(noise == 0 for noise, _, _ in steps):
        return math.inf
    accountants = importlib.import_module("opacus.accountants")
    counter = accountants.create_accountant(mechanism=accountant)
    counter.history = [(float(s), float(q), int(n)) for s, q, n in steps]
    return float(counter.get_epsilon(delta=delta))


@dataclass
class PrivacyLedger:
    """One client's DP-SGD settings and accountant history; every private fit records to it."""

    settings: DpSgdSettings
    history: list[Step] = field(default_factory=list)

    @classmethod
    def from_state(
        cls, settings: DpSgdSettings, group: Mapping[str, npt.NDArray[Any]] | None
    ) -> PrivacyLedger:
        """The ledger kept in the client's state group :data:`DP_SGD_STATE` (None: a new one)."""
        if not group:
            return cls(settings)
        noise, rate, steps = group["noise-multiplier"], group["sample-rate"], group["steps"]
        history = [(float(s), float(q), int(n)) for s, q, n in zip(noise, rate, steps, strict=True)]
        return cls(settings, history)

    def state(self) -> dict[str, npt.NDArray[Any]]:
        """The history as the state group's arrays (one entry per fit)."""
        return {
            "noise-multiplier": np.array([s for s, _, _ in self.history], dtype=np.float64),
            "sample-rate": np.array([q for _, q, _ in self.history], dtype=np.float64),
            "steps": np.array([n for _, _, n in self.history], dtype=np.int64),
        }

    def epsilon(self) -> float:
        """ε so far, for the settings' δ."""
        return epsilon(self.history, self.settings.delta, self.settings.accountant)

    def train(
        self,
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
        """:func:`private_train_local` with this ledger's settings; its steps are recorded."""
        # Seeded: one seed per fit (FedRep and Ditto fit twice a round); else OS entropy.
        seed = settings.seed * 1_000 + len(self.history) if self.settings.seeded else None
        result, step = private_train_local(
            model, task, x, y, settings, self.settings, trainable, proximal_reference, device,
            features, objective, seed,
        )  # fmt: skip
        if step[2] > 0:
            self.history.append(step)
        return result


def private_train_local(
    model: MultiTaskModel,
    task: str,
    x: npt.NDArray[Any],
    y: npt.NDArray[Any],
    settings: TrainSettings,
    dp: DpSgdSettings,
    trainable: set[str],
    proximal_reference: Mapping[str, torch.Tensor] | None = None,
    device: torch.device | None = None,
    features: torch.Tensor | None = None,
    objective: TaskObjective = CLASSIFICATION,
    seed: int | None = None,
) -> tuple[dict[str, float], Step]:
    """DP-SGD version of :func:`fedmtl.training.train_local`; also returns the accountant entry.

    Parameters are those of ``train_local``, plus ``dp`` and ``seed``: the
    Poisson sampling draws from a CPU generator seeded with it, the noise from
    one on ``device`` seeded with ``seed + 1``. Default (None): a seed from the
    operating system, so nobody holding the run's seed can regenerate them;
    tests pass one. The entry is ``(noise multiplier, sample rate,
    steps taken)``; ``steps == 0`` when nothing trained.

    Raises
    ------
    DpSgdError
        When a trainable layer has buffers (batch norm: its statistics mix the
        examples of a batch, so per-example gradients do not exist), or a layer
        in train mode holds batch statistics.
    """
    device = device or torch.device("cpu")
    (model.heads if features is not None else model).to(device)
    params = trainable_parameters(model, trainable)
    if not params or settings.epochs == 0 or len(y) == 0:
        empty = {"loss": float("nan") if len(y) == 0 else 0.0, "num-examples": len(y)}
        return empty, (dp.noise_multiplier, 0.0, 0)
    _check_private(model)
    lib = opacus()
    seed = secrets.randbits(62) if seed is None else seed
    module = lib.GradSampleModule(model, batch_first=True, loss_reduction="sum", strict=True)
    indices = torch.utils.data.TensorDataset(torch.arange(len(y)))
    loader = lib.data_loader.DPDataLoader.from_data_loader(
        torch.utils.data.DataLoader(indices, batch_size=settings.batch_size),
        generator=torch.Generator().manual_seed(seed),
    )
    rate = float(loader.sample_rate)
    optimizer = lib.optimizers.DPOptimizer(
        OPTIMIZERS.get(settings.optimizer)(params, settings),
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        expected_batch_size=max(1, round(rate * len(y))),
        loss_reduction="mean",
        generator=torch.Generator(device=device).manual_seed(seed + 1),
    )
    named = dict(model.named_parameters())
    reference: dict[str, torch.Tensor] = {}
    if settings.proximal_mu > 0 and proximal_reference:
        reference = {k: v.detach().to(device) for k, v in proximal_reference.items() if k in named}
    ys = objective.targets(y).to(device)
    torch.manual_seed(settings.seed)  # dropout and other global draws
    total, count, steps = 0.0, 0, 0
    try:
        for _ in range(settings.epochs):
            for (batch,) in loader:
                optimizer.zero_grad()
                logits = batch_logits(model, task, x, features, batch, device)
                value = objective.kind.loss(logits, ys[batch], "sum")
                with warnings.catch_warnings():  # frozen inputs: Opacus's hooks still fire
                    warnings.filterwarnings("ignore", "Full backward hook", UserWarning)
                    torch.autograd.backward(value)
                if optimizer.pre_step():
                    for key, ref in reference.items():
                        grad = named[key].grad
                        if grad is not None:
                            grad.add_(settings.proximal_mu * (named[key].detach() - ref))
                    optimizer.original_optimizer.step()
                steps += 1
                total += float(value.detach())
                count += len(batch)
    finally:
        optimizer.zero_grad(set_to_none=True)
        module.to_standard_module()
    return (
        {"loss": total / max(count, 1), "num-examples": len(y)},
        (dp.noise_multiplier, rate, steps),
    )


def _check_private(model: nn.Module) -> None:
    """Refuse what has no per-example gradient: trainable layers with buffers, batch statistics."""
    for name, module in model.named_modules():
        trains = any(p.requires_grad for p in module.parameters(recurse=False))
        batch_stats = isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training
        if (trains and any(True for _ in module.buffers(recurse=False))) or batch_stats:
            raise DpSgdError(
                f"dp-sgd: layer '{name}' ({type(module).__name__}) trains with batch statistics "
                "or buffers, which mix the examples of a batch (no per-example gradient); "
                "freeze it (finetune = 'frozen' or a scope-frozen pattern) or use a backbone "
                "with group or layer norm"
            )
