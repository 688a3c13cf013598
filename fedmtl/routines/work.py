"""What a client routine works with: one train or evaluate call, as plain torch objects.

The ClientApp decodes a message into a :class:`LocalWork` (the instruction, the
client's data and entry names, the round's settings, its saved state and the
received arrays) and a routine turns it into a :class:`Trained` result or
evaluation metrics. No Flower message or context reaches a routine.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import torch

from fedmtl.data import ClientData
from fedmtl.models import MultiTaskModel
from fedmtl.models.state import export_arrays, import_arrays
from fedmtl.private_training import DpSgdError, PrivacyLedger
from fedmtl.records import (
    Instruction,
    NDArrays,
    cosine_metric,
    pack_task_metrics,
)
from fedmtl.task_kinds import CLASSIFICATION, TaskObjective
from fedmtl.task_training import JointResult, TaskInputs, train_tasks
from fedmtl.task_weighting import TaskWeighting
from fedmtl.training import TrainSettings, evaluate

#: State group of the client's local scope, kept between rounds by every routine.
LOCAL_STATE = "fedmtl-local"


@dataclass(frozen=True)
class ClientKeys:
    """The state_dict entries of one client's model, by scope (its tasks' entries only)."""

    shared: tuple[str, ...]
    task: tuple[str, ...]
    local: tuple[str, ...]
    trainable: frozenset[str]  # parameters of the shared, task and local scopes

    @property
    def personal(self) -> tuple[str, ...]:
        """Every entry a client may hold a value of its own for (all but the frozen scope)."""
        return self.shared + self.task + self.local


@dataclass(frozen=True)
class Trained:
    """What a routine's train step leaves: the model to reply with, its metrics, extra state.

    The ClientApp sends ``model``'s shared and task entries, keeps its local
    entries (:data:`LOCAL_STATE`) and every group of ``state`` (e.g. Ditto's
    personal model) in the client's state store, and replies ``metrics``.
    """

    model: MultiTaskModel
    metrics: Mapping[str, float]
    state: Mapping[str, NDArrays] = field(default_factory=dict)


@dataclass(frozen=True)
class LocalWork:
    """One train or evaluate call of a client: everything a routine may use.

    Parameters
    ----------
    instruction : Instruction
        The server's config record, decoded.
    tasks : tuple of ClientData
        Each task the client holds, with its train and test splits (most
        clients hold one).
    keys : ClientKeys
        The model's entries by scope.
    settings : TrainSettings
        This round's optimiser settings (the server's where it said, else the
        experiment's), seeded per client and round.
    state : mapping
        The client's saved state groups (``LOCAL_STATE`` and any routine's own).
    received : NDArrays
        The shared and task arrays the server sent.
    device : torch.device
        Where to train and evaluate.
    new_model : callable
        A fresh copy of the run's initial model.
    features : callable
        ``features(data, split, model)``: cached backbone features of a task's
        ``"train"`` or ``"test"`` inputs when the backbone is frozen, else None
        (``model`` computes them on a cache miss).
    objectives : mapping of str to TaskObjective
        Each task's kind and target scale (its loss and metrics; a task not
        listed is a classification).
    weighting : TaskWeighting, optional
        How the client's task losses combine in training (default ``equal``);
        its state is kept by the ClientApp between rounds.
    private : PrivacyLedger, optional
        With ``dp-sgd = true``: every :meth:`fit` trains with DP-SGD
        (:mod:`fedmtl.private_training`) and records its steps here; the
        ClientApp keeps the ledger in the client's state and reports its ε.
    """

    instruction: Instruction
    tasks: tuple[ClientData, ...]
    keys: ClientKeys
    settings: TrainSettings
    state: Mapping[str, NDArrays]
    received: NDArrays
    device: torch.device
    new_model: Callable[[], MultiTaskModel]
    features: Callable[[ClientData, str, MultiTaskModel], torch.Tensor | None]
    objectives: Mapping[str, TaskObjective] = field(default_factory=dict)
    weighting: TaskWeighting | None = None
    private: PrivacyLedger | None = None
    _features: dict[tuple[str, str], torch.Tensor | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def client_id(self) -> int:
        """The client's id."""
        return self.tasks[0].client_id

    def restore(self, *groups: NDArrays | None) -> MultiTaskModel:
        """A fresh model holding the received arrays, then each group in turn (None: skipped)."""
        model = self.new_model()
        import_arrays(model, self.received)
        for group in groups:
            if group:
                import_arrays(model, group)
        return model

    def model(self) -> MultiTaskModel:
        """The client's model: the received arrays and its own local scope."""
        return self.restore(self.state.get(LOCAL_STATE))

    def global_model(self) -> MultiTaskModel:
        """The received arrays alone, with the run's initial local entries (no client state)."""
        return self.restore()

    def local_arrays(self, model: MultiTaskModel) -> NDArrays:
        """``model``'s local-scope entries (what :data:`LOCAL_STATE` keeps)."""
        return export_arrays(model, self.keys.local)

    def head_keys(self, model: MultiTaskModel) -> frozenset[str]:
        """Parameter names of ``model``'s heads of the client's tasks."""
        prefixes = tuple(f"heads.{data.task}." for data in self.tasks)
        return frozenset(name for name, _ in model.named_parameters() if name.startswith(prefixes))

    @cached_property
    def reference(self) -> dict[str, torch.Tensor]:
        """The received entries as the model holds them: the proximal term's anchor."""
        state = self.global_model().state_dict()  # in state_dict order: the term sums in it
        return {key: value.detach().clone() for key, value in state.items() if key in self.received}

    def cached_features(
        self, data: ClientData, split: str, model: MultiTaskModel
    ) -> torch.Tensor | None:
        """Backbone features of a task's ``split``, asked of ``features`` once per call."""
        key = (data.task, split)
        if key not in self._features:
            self._features[key] = self.features(data, split, model)
        return self._features[key]

    def objective(self, task: str) -> TaskObjective:
        """``task``'s kind and target scale."""
        return self.objectives.get(task, CLASSIFICATION)

    def fit(
        self,
        model: MultiTaskModel,
        keys: Iterable[str],
        *,
        epochs: int | None = None,
        settings: TrainSettings | None = None,
        anchored: bool = True,
        weighted: bool = True,
    ) -> dict[str, float]:
        """Train ``keys`` of ``model`` on every task's train split; return the train metrics.

        ``settings`` (default: the round's) with ``epochs`` if given. ``anchored``
        adds the proximal term towards the received arrays when the settings'
        ``proximal_mu`` is above 0 (FedProx; Ditto's personal model).
        ``weighted`` uses the client's task weighting (else ``equal``). The
        metrics are ``loss`` and ``num-examples``; a client holding several
        tasks adds each task's as ``"<task>/<name>"`` and the gradient cosines
        (``fedmtl.records.pack_task_metrics``, ``cosine_metric``).
        """
        settings = settings or self.settings
        if epochs is not None:
            settings = dataclasses.replace(settings, epochs=epochs)
        reference = self.reference if anchored and settings.proximal_mu > 0 else None
        if self.private is not None:
            return self._private_fit(model, set(keys), settings, reference)
        parts = [
            TaskInputs(
                data.task, data.x_train, data.y_train, self.objective(data.task),
                self.cached_features(data, "train", model),
            )
            for data in self.tasks
        ]  # fmt: skip
        result = train_tasks(
            model, parts, settings, set(keys), self.weighting if weighted else None, reference,
            self.device,
        )  # fmt: skip
        return fit_metrics(result)

    def _private_fit(
        self,
        model: MultiTaskModel,
        keys: set[str],
        settings: TrainSettings,
        reference: Mapping[str, torch.Tensor] | None,
    ) -> dict[str, float]:
        """:meth:`fit` with DP-SGD (one task per client, equal weighting: refused otherwise)."""
        assert self.private is not None
        if len(self.tasks) != 1:
            raise DpSgdError("dp-sgd trains clients holding one task (tasks-per-client = 1)")
        data = self.tasks[0]
        return self.private.train(
            model, data.task, data.x_train, data.y_train, settings, keys, reference, self.device,
            self.cached_features(data, "train", model), self.objective(data.task),
        )  # fmt: skip

    def test(self, model: MultiTaskModel, head_epochs: int = 0) -> dict[str, float]:
        """Loss, each task kind's metrics and example counts of ``model`` on the test splits.

        With ``head_epochs > 0`` copies of the tasks' heads are first fine-tuned
        that long on the train splits (the model's own heads may be the frozen
        ones of the initial model, shared by every fresh copy). A client holding
        several tasks reports them as ``pack_task_metrics`` does.
        """
        if head_epochs > 0:
            if self.private is not None:
                raise DpSgdError(
                    "dp-sgd: fine-tuning a head at evaluation (head-finetune-epochs, "
                    "global-view-epochs, unseen clients) trains on private data outside the "
                    "accountant; not supported"
                )
            for data in self.tasks:
                model.heads[data.task] = copy.deepcopy(model.heads[data.task])
            self.fit(
                model, self.head_keys(model), epochs=head_epochs, anchored=False, weighted=False
            )
        by_task = {}
        for data in self.tasks:
            by_task[data.task] = evaluate(
                model, data.task, data.x_test, data.y_test, self.device,
                features=self.cached_features(data, "test", model),
                objective=self.objective(data.task),
            )  # fmt: skip
        return pack_task_metrics(by_task)


def fit_metrics(result: JointResult) -> dict[str, float]:
    """A fit's metrics: ``loss`` and ``num-examples``, per task and cosines for several tasks."""
    if len(result.tasks) == 1:
        return dict(next(iter(result.tasks.values())))
    metrics = pack_task_metrics(result.tasks)
    metrics.update({cosine_metric(a, b): value for (a, b), value in result.cosines.items()})
    return metrics
