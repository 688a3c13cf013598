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
from fedmtl.records import Instruction, NDArrays
from fedmtl.task_kinds import CLASSIFICATION, TaskObjective
from fedmtl.training import TrainSettings, evaluate, train_local

#: State group of the client's local scope, kept between rounds by every routine.
LOCAL_STATE = "fedmtl-local"


@dataclass(frozen=True)
class ClientKeys:
    """The state_dict entries of one client's model, by scope (its task's entries only)."""

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
    data : ClientData
        The client's task and its train and test splits.
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
        ``features(split, model)``: cached backbone features of ``"train"`` or
        ``"test"`` when the backbone is frozen, else None (``model`` computes
        them on a cache miss).
    objective : TaskObjective
        The client's task kind and target scale (its loss and metrics; default
        classification).
    """

    instruction: Instruction
    data: ClientData
    keys: ClientKeys
    settings: TrainSettings
    state: Mapping[str, NDArrays]
    received: NDArrays
    device: torch.device
    new_model: Callable[[], MultiTaskModel]
    features: Callable[[str, MultiTaskModel], torch.Tensor | None]
    objective: TaskObjective = CLASSIFICATION
    _features: dict[str, torch.Tensor | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

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
        """Parameter names of ``model``'s head for the client's task."""
        prefix = f"heads.{self.data.task}."
        return frozenset(name for name, _ in model.named_parameters() if name.startswith(prefix))

    @cached_property
    def reference(self) -> dict[str, torch.Tensor]:
        """The received entries as the model holds them: the proximal term's anchor."""
        state = self.global_model().state_dict()  # in state_dict order: the term sums in it
        return {key: value.detach().clone() for key, value in state.items() if key in self.received}

    def cached_features(self, split: str, model: MultiTaskModel) -> torch.Tensor | None:
        """Backbone features of ``split``, asked of ``features`` once per call."""
        if split not in self._features:
            self._features[split] = self.features(split, model)
        return self._features[split]

    def fit(
        self,
        model: MultiTaskModel,
        keys: Iterable[str],
        *,
        epochs: int | None = None,
        settings: TrainSettings | None = None,
        anchored: bool = True,
    ) -> dict[str, float]:
        """Train ``keys`` of ``model`` on the train split; return loss and example count.

        ``settings`` (default: the round's) with ``epochs`` if given. ``anchored``
        adds the proximal term towards the received arrays when the settings'
        ``proximal_mu`` is above 0 (FedProx; Ditto's personal model).
        """
        settings = settings or self.settings
        if epochs is not None:
            settings = dataclasses.replace(settings, epochs=epochs)
        reference = self.reference if anchored and settings.proximal_mu > 0 else None
        data = self.data
        return train_local(
            model, data.task, data.x_train, data.y_train, settings, set(keys), reference,
            self.device, features=self.cached_features("train", model), objective=self.objective,
        )  # fmt: skip

    def test(self, model: MultiTaskModel, head_epochs: int = 0) -> dict[str, float]:
        """Loss, the task kind's metrics and example count of ``model`` on the test split.

        With ``head_epochs > 0`` a copy of the task's head is first fine-tuned
        that long on the train split (the model's own head may be the frozen
        one of the initial model, shared by every fresh copy).
        """
        task = self.data.task
        if head_epochs > 0:
            model.heads[task] = copy.deepcopy(model.heads[task])
            self.fit(model, self.head_keys(model), epochs=head_epochs, anchored=False)
        features = self.cached_features("test", model)
        return evaluate(
            model, task, self.data.x_test, self.data.y_test, self.device,
            features=features, objective=self.objective,
        )  # fmt: skip
