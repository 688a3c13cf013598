"""Checks on what a dataset plug-in returns, before any client trains on it.

Run once per run (:func:`fedmtl.run_model.check_run_inputs`) and by the
contract tests over every registered dataset.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from fedmtl.data.federation import ClientData
from fedmtl.data.registry import DatasetSpec
from fedmtl.task_kinds import TASK_KINDS, TargetError

INPUT_KINDS = ("image", "text", "vector")


class DatasetContractError(ValueError):
    """A dataset plug-in returned something the rest of fedmtl cannot use."""


def check_dataset_spec(spec: DatasetSpec) -> None:
    """The spec names its tasks consistently, with outputs, and a known input kind.

    Raises
    ------
    DatasetContractError
        Saying what is wrong.
    """
    where = f"dataset '{spec.name}'"
    if not spec.tasks:
        raise DatasetContractError(f"{where} offers no tasks")
    for name, task in spec.tasks.items():
        if task.name != name:
            raise DatasetContractError(f"{where}: task '{name}' calls itself '{task.name}'")
        if task.num_outputs < 1:
            raise DatasetContractError(
                f"{where}: task '{name}' has {task.num_outputs} outputs; needs >= 1"
            )
    if spec.input_kind not in INPUT_KINDS:
        raise DatasetContractError(
            f"{where}: input kind '{spec.input_kind}' is not one of {list(INPUT_KINDS)}"
        )
    if not 0.0 <= spec.source_fraction < 1.0:
        raise DatasetContractError(
            f"{where}: source fraction {spec.source_fraction} leaves no data for the clients"
        )


def check_examples(
    where: str,
    x: npt.NDArray[Any],
    y: npt.NDArray[Any],
    num_outputs: int,
    kind: str = "classification",
) -> None:
    """Inputs and targets of matching length, targets valid for the task ``kind``, finite inputs.

    A classification's labels are integers in range; a regression's targets
    finite numbers (see :meth:`fedmtl.task_kinds.TaskKind.check_targets`).

    Raises
    ------
    DatasetContractError
        Naming ``where`` (which client, which split) and what is wrong.
    """
    if len(x) != len(y):
        raise DatasetContractError(f"{where}: {len(x)} inputs but {len(y)} labels")
    try:
        TASK_KINDS.get(kind).check_targets(y, num_outputs)
    except TargetError as error:
        raise DatasetContractError(f"{where}: {error}") from None
    if x.dtype == object:
        if not all(isinstance(item, str) for item in x):
            raise DatasetContractError(f"{where}: an object array of inputs must hold str texts")
    elif x.dtype.kind in "fc" and not np.isfinite(x).all():
        raise DatasetContractError(f"{where}: inputs hold NaN or infinite values")


def check_client_data(data: ClientData, spec: DatasetSpec) -> None:
    """One client's train and test arrays pass :func:`check_examples` for its task."""
    task = spec.tasks[data.task]
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        where = f"dataset '{spec.name}', client {data.client_id} ({data.task}), {split}"
        check_examples(where, x, y, task.num_outputs, task.kind)


def check_client_tasks(parts: tuple[ClientData, ...], spec: DatasetSpec) -> None:
    """A client's parts: at least one, one client id, distinct tasks, each part checked.

    Raises
    ------
    DatasetContractError
        Naming the client and what is wrong.
    """
    if not parts:
        raise DatasetContractError(f"dataset '{spec.name}': a client holds no task")
    ids = {part.client_id for part in parts}
    tasks = [part.task for part in parts]
    where = f"dataset '{spec.name}', client {parts[0].client_id}"
    if len(ids) != 1:
        raise DatasetContractError(f"{where}: its parts name clients {sorted(ids)}")
    if len(set(tasks)) != len(tasks):
        raise DatasetContractError(f"{where}: holds a task twice: {tasks}")
    for part in parts:
        check_client_data(part, spec)
