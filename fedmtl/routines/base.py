"""The client routine base class (the ``default`` routine) and the routine registry.

A strategy names the routine its clients run in the ``"client-routine"`` key
of the config it sends (``fedmtl.records.ROUTINE``); stock Flower strategies
send nothing and get ``default``. A routine is a :class:`ClientRoutine`
subclass registered in one line, or any ``"package.module:attr"`` naming one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import ClassVar, TypeVar

from fedmtl.models import MultiTaskModel
from fedmtl.records import (
    BATCH_SIZE,
    CHECKPOINT_ROUND,
    DEFAULT_ROUTINE,
    GLOBAL_VIEW_EPOCHS,
    HEAD_FINETUNE_EPOCHS,
    LEARNING_RATE,
    LOCAL_EPOCHS,
    NUM_EXAMPLES,
    PROXIMAL_MU,
    ROUTINE,
    SERVER_ROUND,
    TASK_METRIC_SEPARATOR,
    Instruction,
    prefixed_metrics,
)
from fedmtl.registry import Registry, RegistryError
from fedmtl.routines.work import LocalWork, Trained

R = TypeVar("R", bound="type[ClientRoutine]")


class ClientRoutine:
    """The client side of an algorithm; this base class is the ``default`` routine.

    ``train``: the client's model (received arrays + its local scope) gets the
    round's :meth:`update`: every trainable entry trains for the round's
    epochs, with FedProx's proximal term towards the received arrays when
    ``proximal-mu > 0``.

    ``evaluate``: :meth:`evaluated_model` (the client's model) is tested on the
    client's test split, after fine-tuning a copy of its task head for
    ``head-finetune-epochs`` (FedBABU, unseen clients); with
    ``global-view-epochs > 0`` the global view (the received arrays with the
    initial local entries, its head tuned that long) is reported too, as
    ``global-*`` metrics.

    A new algorithm subclasses this, overrides one hook (:meth:`update`,
    :meth:`evaluated_model`, or ``train`` / ``evaluate`` as a whole), calls
    ``super()``, and registers it with :func:`register_routine`. ``reads``
    lists every known config key the routine acts on; the client refuses an
    instruction carrying a known key its routine would ignore (a strategy that
    forgot to name its routine). Plug-in keys (``Instruction.extras``) are not
    checked.
    """

    reads: ClassVar[frozenset[str]] = frozenset(
        {
            SERVER_ROUND,
            LOCAL_EPOCHS,
            BATCH_SIZE,
            LEARNING_RATE,
            PROXIMAL_MU,
            ROUTINE,
            HEAD_FINETUNE_EPOCHS,
            GLOBAL_VIEW_EPOCHS,
            CHECKPOINT_ROUND,
        }
    )

    def train(self, work: LocalWork) -> Trained:
        """The client's model after the round's :meth:`update`, with its metrics."""
        model = work.model()
        return Trained(model, train_metrics(self.update(work, model)))

    def update(self, work: LocalWork, model: MultiTaskModel) -> dict[str, float]:
        """Train ``model`` in place for the round; return its loss and example count."""
        return work.fit(model, work.keys.trainable)

    def evaluate(self, work: LocalWork) -> dict[str, float]:
        """Test :meth:`evaluated_model` (and the global view when asked)."""
        instruction = work.instruction
        result = work.test(self.evaluated_model(work), instruction.head_finetune_epochs)
        if instruction.global_view_epochs > 0:
            view = work.test(work.global_model(), instruction.global_view_epochs)
            result.update(prefixed_metrics(view, "global-"))
        return result

    def evaluated_model(self, work: LocalWork) -> MultiTaskModel:
        """The model an evaluate message measures (default: the client's model)."""
        return work.model()


def train_metrics(result: dict[str, float]) -> dict[str, float]:
    """A train reply's metrics from :meth:`LocalWork.fit`'s result.

    Example count and loss first; a client holding several tasks keeps each
    task's (``"<task>/<name>"``) and its gradient cosines.
    """
    per_task = {k: v for k, v in result.items() if TASK_METRIC_SEPARATOR in k}
    return {NUM_EXAMPLES: result[NUM_EXAMPLES], "loss": result["loss"], **per_task}


#: Routine name -> ClientRoutine subclass.
ROUTINES: Registry[type[ClientRoutine]] = Registry("client routine")
ROUTINES.add(DEFAULT_ROUTINE, ClientRoutine)


def register_routine(name: str) -> Callable[[R], R]:
    """Register the decorated ClientRoutine subclass under ``name`` (unique, lower-case)."""

    def decorator(cls: R) -> R:
        ROUTINES.add(name, cls)
        return cls

    return decorator


def resolve_routine(name: str, strategy: str = "") -> ClientRoutine:
    """The routine called ``name``: a registered name or ``"package.module:attr"``.

    ``strategy`` is the run's strategy; a plug-in given as ``"package.module:Class"``
    has its module imported before an unregistered ``name`` is looked up, so a
    routine registered beside the strategy is found on every client.

    Raises
    ------
    RegistryError
        For an unknown name (listing the known ones) or a target that cannot
        be imported or is no ClientRoutine.
    """
    if ":" in name:
        return _instance(name, _import_attr(name))
    if name not in ROUTINES and ":" in strategy:
        importlib.import_module(strategy.partition(":")[0])
    return ROUTINES.get(name)()


def routine_for(instruction: Instruction, strategy: str = "") -> ClientRoutine:
    """The routine an instruction names, checked to read every known key it carries."""
    routine = resolve_routine(instruction.routine, strategy)
    ignored = sorted(instruction.sent_keys() - routine.reads)
    if ignored:
        readers = [n for n in ROUTINES if ignored[0] in ROUTINES.get(n).reads]
        raise ValueError(
            f"client routine '{instruction.routine}' does not read {ignored}: the strategy "
            f"must name its routine in '{ROUTINE}' (routines reading '{ignored[0]}': {readers})"
        )
    return routine


def _import_attr(name: str) -> object:
    module, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise RegistryError(f"client routine '{name}' cannot be imported: {exc}") from None


def _instance(name: str, target: object) -> ClientRoutine:
    if isinstance(target, ClientRoutine):
        return target
    if isinstance(target, type) and issubclass(target, ClientRoutine):
        return target()
    raise RegistryError(f"client routine '{name}' is {target!r}, not a ClientRoutine")
