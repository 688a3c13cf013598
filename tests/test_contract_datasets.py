"""Contract tests over every registered dataset: what a dataset plug-in returns is usable.

Parametrised from the registry, so a new dataset is tested by registering it. A
dataset that needs files gets tiny ones from ``TINY_OPTIONS``; one that takes no
options needs no entry. The checks are the ones a run makes before it starts
(:mod:`fedmtl.data.checks`), plus a federation built from the data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from fedmtl.data import get_dataset_spec
from fedmtl.data.checks import check_client_data, check_dataset_spec, check_examples
from fedmtl.data.federation import PartitionSpec
from fedmtl.data.registry import DATASETS, DatasetSpec
from tests.federation_helpers import one_task_federation
from tests.tiny_text_files import fortunes_dir, wordnet_dir


def _files_options(root: Path) -> dict[str, Any]:
    """One npz task of 4-feature vectors with three classes."""
    rng = np.random.default_rng(0)
    path = root / "vectors.npz"
    np.savez(path, x=rng.normal(size=(12, 4)).astype(np.float32), y=np.arange(12) % 3)
    return {"tasks": {"vectors": {"path": str(path)}}}


def _text_options(root: Path) -> dict[str, Any]:
    """A few synsets and fortunes in the Debian formats (no apt-get needed)."""
    return {
        "wordnet-dir": str(wordnet_dir(root / "wordnet")),
        "fortunes-dir": str(fortunes_dir(root / "fortunes")),
        "fortune-categories": ["work", "people"],
    }


TINY_OPTIONS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "files": _files_options,
    "wordnet-fortunes": _text_options,
}
NAMES = DATASETS.names()


def test_every_registered_dataset_is_checked() -> None:
    assert len(NAMES) == len(DATASETS) == 3
    assert set(NAMES) == {"digits", "files", "wordnet-fortunes"}
    assert set(TINY_OPTIONS) <= set(NAMES)  # no options left for a dataset that is gone


def _task_examples(spec: DatasetSpec, task: str) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """A task's inputs and task labels, as clients of the whole pool would see them."""
    base = spec.load() if spec.load is not None else spec.task_data(task)  # type: ignore[misc]
    return base.x, spec.tasks[task].label_fn(base.y)


@pytest.mark.parametrize("name", NAMES)
def test_dataset_returns_tasks_with_matching_finite_in_range_examples(
    name: str, tmp_path: Path
) -> None:
    # Prepare
    options = TINY_OPTIONS.get(name, lambda _: {})(tmp_path)

    # Execute
    spec = get_dataset_spec(name, options)

    # Assert: the spec, then every task's examples
    assert spec.name == name
    check_dataset_spec(spec)
    for task, task_spec in spec.tasks.items():
        x, y = _task_examples(spec, task)
        assert len(y) > 0, task
        check_examples(f"{name}/{task}", x, y, task_spec.num_outputs, task_spec.kind)


@pytest.mark.parametrize("name", NAMES)
def test_dataset_feeds_a_federation_whose_clients_pass_the_run_checks(
    name: str, tmp_path: Path
) -> None:
    # Prepare: one IID client per task
    options = TINY_OPTIONS.get(name, lambda _: {})(tmp_path)
    spec = get_dataset_spec(name, options)
    tasks = tuple(sorted(spec.tasks))
    partition = PartitionSpec(
        dataset=name,
        tasks=tasks,
        num_clients=len(tasks),
        partitioner="iid",
        dataset_options=json.dumps(options, sort_keys=True),
    )

    # Execute
    clients = one_task_federation(partition, cached=False)

    # Assert
    assert [c.task for c in clients] == list(tasks)
    for client in clients:
        assert client.num_train > 0
        check_client_data(client, spec)
