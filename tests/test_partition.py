"""Tests for :mod:`fedmtl.data.federation` (per-client, per-task partitions)."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from fedmtl.cli import main
from fedmtl.config import ConfigError, build_config
from fedmtl.data import get_dataset_spec
from fedmtl.data.federation import (
    ClientData,
    PartitionSpec,
    assign_tasks,
    build_federation,
    client_data,
    partition_indices,
)
from fedmtl.data.partitioners import PARTITIONERS, PartitionError

TASKS = ("digit", "parity", "ge5")
PARTITIONERS_UNDER_TEST = ("iid", "dirichlet", "pathological")


def _spec(partitioner: str, seed: int = 0, **extra: object) -> PartitionSpec:
    values: dict[str, object] = {
        "dataset": "digits",
        "tasks": TASKS,
        "num_clients": 6,
        "partitioner": partitioner,
        "classes_per_client": 3,
        "seed": seed,
    }
    values.update(extra)
    return PartitionSpec(**values)  # type: ignore[arg-type]


def _build_uncached(spec: PartitionSpec) -> tuple[ClientData, ...]:
    """The federation of one-task clients, one ClientData each (the lru_cache bypassed)."""
    with warnings.catch_warnings():  # pathological: "Classes ... will NOT be used"
        warnings.simplefilter("ignore", UserWarning)
        federation = build_federation.__wrapped__(spec)
    assert all(len(parts) == 1 for parts in federation)
    return tuple(part for (part,) in federation)


class BaseIndex:
    """Finds the base-data index of an image (digits images are all distinct)."""

    def __init__(self) -> None:
        dataset = get_dataset_spec("digits")
        self.base = dataset.load()
        self.source, self.pool = dataset.source_split(len(self.base.y))
        self._by_bytes = {row.tobytes(): i for i, row in enumerate(self.base.x)}
        assert len(self._by_bytes) == len(self.base.x), "digits images are no longer unique"

    def indices(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
        return np.asarray([self._by_bytes[row.tobytes()] for row in x], dtype=np.int64)


@pytest.fixture(scope="module")
def base_index() -> BaseIndex:
    return BaseIndex()


@pytest.mark.parametrize("partitioner", PARTITIONERS_UNDER_TEST)
def test_same_seed_gives_identical_federation(partitioner: str) -> None:
    # Execute: two independent builds (the lru_cache bypassed)
    first = _build_uncached(_spec(partitioner, seed=3))
    second = _build_uncached(_spec(partitioner, seed=3))

    # Assert
    assert len(first) == len(second) == 6
    for a, b in zip(first, second, strict=True):
        assert (a.client_id, a.task) == (b.client_id, b.task)
        for field in ("x_train", "y_train", "x_test", "y_test"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.mark.parametrize("partitioner", PARTITIONERS_UNDER_TEST)
def test_different_seed_gives_different_partition(partitioner: str, base_index: BaseIndex) -> None:
    # Execute
    first = _build_uncached(_spec(partitioner, seed=0))
    second = _build_uncached(_spec(partitioner, seed=1))

    # Assert: some client holds a different set of examples
    def held(clients: tuple[ClientData, ...]) -> list[set[int]]:
        return [
            set(base_index.indices(np.concatenate([c.x_train, c.x_test])).tolist()) for c in clients
        ]

    assert held(first) != held(second)


def test_build_federation_is_cached_per_spec() -> None:
    spec = _spec("dirichlet")
    assert build_federation(spec) is build_federation(_spec("dirichlet"))


@pytest.mark.parametrize("partitioner", PARTITIONERS_UNDER_TEST)
def test_clients_never_see_source_split_and_train_test_are_disjoint(
    partitioner: str, base_index: BaseIndex
) -> None:
    # Prepare
    source = set(base_index.source.tolist())

    # Execute
    clients = _build_uncached(_spec(partitioner))

    # Assert
    seen: list[int] = []
    for client in clients:
        train = base_index.indices(client.x_train).tolist()
        test = base_index.indices(client.x_test).tolist()
        assert not set(train) & set(test), client.client_id
        assert not (set(train) | set(test)) & source, client.client_id
        assert len(test) >= 1
        seen.extend(train + test)
    assert len(seen) == len(set(seen)), "an example is held by two clients"


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet"])
def test_union_of_clients_covers_pool_exactly_once(partitioner: str, base_index: BaseIndex) -> None:
    # Execute
    clients = _build_uncached(_spec(partitioner))

    # Assert
    seen = np.concatenate(
        [base_index.indices(np.concatenate([c.x_train, c.x_test])) for c in clients]
    )
    assert len(seen) == len(base_index.pool)
    np.testing.assert_array_equal(np.sort(seen), base_index.pool)


def test_source_split_is_fixed_and_disjoint(base_index: BaseIndex) -> None:
    source, pool = base_index.source, base_index.pool
    assert len(source) == round(0.3 * len(base_index.base.y))
    assert not set(source.tolist()) & set(pool.tolist())
    assert len(source) + len(pool) == len(base_index.base.y)
    again_source, _ = get_dataset_spec("digits").source_split(len(base_index.base.y))
    np.testing.assert_array_equal(source, again_source)


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet"])
def test_partition_indices_is_a_partition_of_positions(partitioner: str) -> None:
    # Prepare
    labels = np.random.default_rng(0).integers(0, 10, size=500).astype(np.int64)

    # Execute
    parts = partition_indices(labels, _spec(partitioner, num_clients=5))

    # Assert
    assert len(parts) == 5
    everything = np.concatenate(parts)
    np.testing.assert_array_equal(np.sort(everything), np.arange(500))
    for part in parts:
        assert part.dtype == np.int64
        np.testing.assert_array_equal(part, np.sort(part))


def test_iid_partition_sizes_are_balanced() -> None:
    labels = np.zeros(503, dtype=np.int64)
    parts = partition_indices(labels, _spec("iid", num_clients=5))
    sizes = sorted(len(p) for p in parts)
    assert sizes[-1] - sizes[0] <= 1


@pytest.mark.parametrize("classes_per_client", [1, 2, 3])
def test_pathological_limits_base_classes_per_client(
    classes_per_client: int, base_index: BaseIndex
) -> None:
    # Prepare
    spec = _spec("pathological", classes_per_client=classes_per_client)
    pool_labels = base_index.base.y[base_index.pool]

    # Execute
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        parts = partition_indices(pool_labels, spec)
    clients = _build_uncached(spec)

    # Assert: through the positions and through the clients' actual images
    for part in parts:
        assert 1 <= len(np.unique(pool_labels[part])) <= classes_per_client
    for client in clients:
        idx = base_index.indices(np.concatenate([client.x_train, client.x_test]))
        assert len(np.unique(base_index.base.y[idx])) <= classes_per_client


@pytest.mark.parametrize("partitioner", PARTITIONERS_UNDER_TEST)
def test_labels_are_the_task_labels_of_the_base_digits(
    partitioner: str, base_index: BaseIndex
) -> None:
    # Prepare
    dataset = get_dataset_spec("digits")

    # Execute
    clients = _build_uncached(_spec(partitioner))

    # Assert
    for client in clients:
        task = dataset.tasks[client.task]
        for x, y in ((client.x_train, client.y_train), (client.x_test, client.y_test)):
            assert y.dtype == np.int64
            assert np.all((y >= 0) & (y < task.num_outputs))
            base_y = base_index.base.y[base_index.indices(x)]
            np.testing.assert_array_equal(y, task.label_fn(base_y))


def test_tasks_follow_round_robin_in_federation() -> None:
    clients = _build_uncached(_spec("iid"))
    assert [c.task for c in clients] == ["digit", "parity", "ge5"] * 2
    assert [c.client_id for c in clients] == list(range(6))


def test_test_fraction_sets_test_share() -> None:
    clients = _build_uncached(_spec("iid", test_fraction=0.5))
    for client in clients:
        total = client.num_train + len(client.y_test)
        assert len(client.y_test) == round(0.5 * total)


def test_assign_tasks_round_robin() -> None:
    assert assign_tasks(("a", "b", "c"), 7, "round-robin", {}) == (
        ("a",),
        ("b",),
        ("c",),
        ("a",),
        ("b",),
        ("c",),
        ("a",),
    )


def test_assign_tasks_counts_gives_consecutive_blocks_in_task_order() -> None:
    # Execute
    tasks = assign_tasks(("a", "b", "c"), 6, "counts", {"c": 1, "a": 3, "b": 2})

    # Assert
    assert tasks == (("a",), ("a",), ("a",), ("b",), ("b",), ("c",))
    assert Counter(t for (t,) in tasks) == {"a": 3, "b": 2, "c": 1}


def test_assign_tasks_counts_must_add_up() -> None:
    with pytest.raises(ValueError, match="add up to 5 but num-clients is 6"):
        assign_tasks(("a", "b"), 6, "counts", {"a": 3, "b": 2})


def test_assign_tasks_unknown_mode() -> None:
    with pytest.raises(ValueError, match="'shuffle' is not one of"):
        assign_tasks(("a",), 2, "shuffle", {})


def test_federation_with_task_counts() -> None:
    spec = _spec(
        "iid", task_assignment="counts", task_counts=(("digit", 4), ("ge5", 1), ("parity", 1))
    )
    assert [c.task for c in _build_uncached(spec)] == [
        "digit",
        "digit",
        "digit",
        "digit",
        "parity",
        "ge5",
    ]


def test_client_data_rejects_unknown_client_id() -> None:
    spec = _spec("iid")
    assert client_data(spec, 5).client_id == 5
    with pytest.raises(IndexError):
        client_data(spec, 6)
    with pytest.raises(IndexError):
        client_data(spec, -1)


def test_unknown_partitioner_raises() -> None:
    with pytest.raises(ValueError, match="unknown partitioner"):
        partition_indices(np.zeros(10, dtype=np.int64), _spec("shards"))


# ---------------------------------------------------------------- the partitioner registry


def test_partitioners_are_a_registry_read_by_the_config() -> None:
    assert list(PARTITIONERS) == ["dirichlet", "iid", "natural", "pathological"]
    # Every one is tested: above over the digits pool, natural (clients from the data's
    # client ids, which digits has none of) in tests/test_natural_partitions.py.
    assert sorted([*PARTITIONERS_UNDER_TEST, "natural"]) == PARTITIONERS.names()
    with pytest.raises(ConfigError) as info:
        build_config({"partitioner": "dirichelt"})
    assert info.value.key == "partitioner"
    assert "did you mean 'dirichlet'" in str(info.value)


# flwr-datasets warns at every failed Dirichlet draw before it gives up.
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")
@pytest.mark.parametrize(
    ("extra", "key", "fragment"),
    [
        (
            {"partitioner": "pathological", "classes_per_client": 20},
            "classes-per-client",
            "set classes-per-client <= 10",
        ),
        (
            {"partitioner": "dirichlet", "dirichlet_alpha": 0.001, "num_clients": 12},
            "dirichlet-alpha",
            "a larger dirichlet-alpha",
        ),
        ({"partitioner": "dirichlet", "num_clients": 400}, "num-clients", "<= 314"),
        ({"partitioner": "iid", "num_clients": 3000}, "num-clients", "only 1258 examples"),
        ({"partitioner": "shards"}, "partitioner", "unknown partitioner 'shards'"),
    ],
)
def test_partition_errors_name_the_key_to_change(
    extra: dict[str, object], key: str, fragment: str, base_index: BaseIndex
) -> None:
    # Prepare
    labels = base_index.base.y[base_index.pool]
    spec = _spec(**{"partitioner": "iid", **extra})  # type: ignore[arg-type]

    # Execute
    with pytest.raises(PartitionError) as info:
        partition_indices(labels, spec)

    # Assert
    assert info.value.key == key
    assert fragment in str(info.value)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")
@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["partitioner=pathological", "classes-per-client=20"], "classes-per-client"),
        (["partitioner=dirichlet", "dirichlet-alpha=0.0001"], "dirichlet-alpha"),
        (["partitioner=iid", "num-clients=3000"], "num-clients"),
    ],
)
def test_cli_stops_a_run_that_cannot_be_split_naming_the_key(
    overrides: list[str], key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    args = [a for o in [*overrides, f"output-dir={tmp_path / 'runs'}"] for a in ("--set", o)]
    status = main(["simulate", *args])

    # Assert: exit 2 naming the key, and no run was started
    assert status == 2
    assert f"config key '{key}'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
