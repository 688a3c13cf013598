"""Clients holding several tasks: assignment modes, their federation, devices, deployment files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedmtl.centralized import pool_training_data
from fedmtl.config import ConfigError, build_config, config_from_run_config, partition_spec
from fedmtl.data import client_data, client_tasks
from fedmtl.data.assignment import AssignmentError, assign_tasks, parse_client_tasks
from fedmtl.data.checks import DatasetContractError, check_client_tasks
from fedmtl.data.device import DeviceDataError, device_data, device_tasks
from fedmtl.data.federation import PartitionSpec, build_federation, train_test_positions
from fedmtl.data.partitioners import PartitionError
from fedmtl.data.shifts import client_levels
from fedmtl.deploy.device_files import write_device_files
from fedmtl.deploy.local import DeployOptions, LocalFederation

TASKS = ("digit", "parity", "ge5")


# --- assignment ----------------------------------------------------------------


def test_round_robin_two_tasks_of_three_over_six_clients_by_hand() -> None:
    # Client c holds tasks[c % 3] and tasks[(c + 1) % 3], listed in task order.
    expected = (
        ("a", "b"),  # 0: a, b
        ("b", "c"),  # 1: b, c
        ("a", "c"),  # 2: c, a
        ("a", "b"),  # 3
        ("b", "c"),  # 4
        ("a", "c"),  # 5
    )
    assert assign_tasks(("a", "b", "c"), 6, "round-robin", tasks_per_client=2) == expected


def test_round_robin_with_every_task_per_client_gives_all_tasks() -> None:
    assert assign_tasks(("a", "b", "c"), 2, "round-robin", tasks_per_client=3) == (
        ("a", "b", "c"),
        ("a", "b", "c"),
    )


def test_round_robin_needs_enough_clients_to_cover_the_tasks() -> None:
    # 2 clients x 2 tasks cover a, b, c of 4 tasks (3 = N + k - 1).
    with pytest.raises(AssignmentError, match="needs num-clients >= 3") as caught:
        assign_tasks(("a", "b", "c", "d"), 2, "round-robin", tasks_per_client=2)
    assert caught.value.key == "num-clients"
    assert assign_tasks(("a", "b", "c", "d"), 3, "round-robin", tasks_per_client=2)[2] == (
        "c",
        "d",
    )


@pytest.mark.parametrize("seed", range(20))
def test_random_gives_each_client_k_tasks_covering_every_task(seed: int) -> None:
    tasks = ("a", "b", "c", "d", "e")
    out = assign_tasks(tasks, 3, "random", tasks_per_client=2, seed=seed)
    assert len(out) == 3
    for held in out:
        assert len(held) == len(set(held)) == 2
        assert list(held) == sorted(held, key=tasks.index)  # run task order
    assert {task for held in out for task in held} == set(tasks)  # 6 slots, 5 tasks: repaired


def test_random_is_seeded_and_reproducible() -> None:
    tasks = ("a", "b", "c", "d")
    draws = {
        seed: assign_tasks(tasks, 8, "random", tasks_per_client=2, seed=seed) for seed in (0, 1)
    }
    assert draws[0] == assign_tasks(tasks, 8, "random", tasks_per_client=2, seed=0)
    assert draws[0] != draws[1]


def test_random_with_one_task_each_and_as_many_clients_as_tasks_is_a_permutation() -> None:
    for seed in range(10):
        out = assign_tasks(("a", "b", "c", "d"), 4, "random", seed=seed)
        assert sorted(t for (t,) in out) == ["a", "b", "c", "d"]


def test_random_needs_enough_slots() -> None:
    with pytest.raises(AssignmentError, match="needs num-clients >= 3") as caught:
        assign_tasks(("a", "b", "c", "d", "e"), 2, "random", tasks_per_client=2)
    assert caught.value.key == "num-clients"


def test_lists_are_read_in_run_task_order_and_may_differ_in_size() -> None:
    lists = parse_client_tasks(["parity+digit", "ge5", "ge5 + digit"])
    assert lists == (("parity", "digit"), ("ge5",), ("ge5", "digit"))
    out = assign_tasks(TASKS, 3, "lists", tasks_per_client=2, lists=lists)
    assert out == (("digit", "parity"), ("ge5",), ("digit", "ge5"))


@pytest.mark.parametrize(
    ("entries", "key", "words"),
    [
        (["digit+parity", "ge5"], "client-tasks", "has 2 entries but num-clients is 3"),
        (["digit+parity", "ge5", "digit+mod3"], "client-tasks", "entry 2 names ['mod3']"),
        (["digit+digit", "ge5", "parity"], "client-tasks", "entry 0 lists a task twice"),
        (["digit", "digit", "digit+ge5"], "client-tasks", "no client holds task(s) ['parity']"),
        (["digit+parity+ge5", "ge5", "parity"], "tasks-per-client", "set tasks-per-client = 3"),
        (["digit", "ge5", "parity"], "tasks-per-client", "set tasks-per-client = 1"),
    ],
)
def test_bad_lists_name_the_key(entries: list[str], key: str, words: str) -> None:
    with pytest.raises(AssignmentError) as caught:
        assign_tasks(TASKS, 3, "lists", tasks_per_client=2, lists=parse_client_tasks(entries))
    assert caught.value.key == key
    assert words in str(caught.value)


def test_an_empty_task_name_in_a_list_is_refused() -> None:
    with pytest.raises(AssignmentError, match=r"entry 1 \('ge5\+'\) has an empty task name"):
        parse_client_tasks(["digit", "ge5+"])


# --- the config keys -------------------------------------------------------------


def _config(values: dict[str, Any]) -> Any:
    return build_config({"tasks": list(TASKS), "num-clients": 6, **values})


@pytest.mark.parametrize(
    ("values", "key", "words"),
    [
        ({"tasks-per-client": 0}, "tasks-per-client", "must be >= 1"),
        ({"tasks-per-client": 4}, "tasks-per-client", "from 1 to 3"),
        ({"tasks-per-client": 1.5}, "tasks-per-client", "expected an integer"),
        ({"tasks-per-client": True}, "tasks-per-client", "expected an integer"),
        ({"task-assignment": "shuffle"}, "task-assignment", "'lists'"),
        (
            {"task-assignment": "counts", "tasks-per-client": 2, "task-counts": {"digit": 6}},
            "task-assignment",
            '"lists"',
        ),
        ({"client-tasks": ["digit"] * 6}, "client-tasks", 'task-assignment = "lists"'),
        ({"task-assignment": "lists"}, "client-tasks", "has 0 entries"),
        (
            {"task-assignment": "lists", "client-tasks": ["digit+"] * 6},
            "client-tasks",
            "empty task name",
        ),
        (
            {"task-assignment": "counts", "task-counts": {"digit": 6, "parity": 0, "ge5": 0}},
            "task-counts",
            "no client holds",
        ),
    ],
)
def test_bad_assignment_keys_raise_config_error_naming_the_key(
    values: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(values)
    assert caught.value.key == key
    assert words in str(caught.value)


def test_config_keys_reach_the_partition_spec() -> None:
    cfg = _config(
        {
            "task-assignment": "lists",
            "tasks-per-client": 2,
            "client-tasks": ["digit+parity", "ge5", "parity+ge5", "digit", "digit+ge5", "parity"],
        }
    )
    spec = partition_spec(cfg)
    assert spec.tasks_per_client == 2
    assert spec.client_tasks[0] == ("digit", "parity")
    assert spec.assignment()[2] == ("parity", "ge5")
    random = partition_spec(_config({"task-assignment": "random", "tasks-per-client": 2}))
    assert random.assignment() == assign_tasks(TASKS, 6, "random", tasks_per_client=2, seed=0)


# --- the federation --------------------------------------------------------------


def _digits(**extra: Any) -> PartitionSpec:
    values: dict[str, Any] = {
        "dataset": "digits",
        "tasks": TASKS,
        "num_clients": 6,
        "tasks_per_client": 2,
        "partitioner": "iid",
    }
    values.update(extra)
    return PartitionSpec(**values)


def test_a_two_task_digits_client_has_one_input_and_two_labels() -> None:
    federation = build_federation(_digits())
    assert [tuple(p.task for p in parts) for parts in federation] == list(
        assign_tasks(TASKS, 6, "round-robin", tasks_per_client=2)
    )
    digit, parity = federation[0]
    assert digit.client_id == parity.client_id == 0
    np.testing.assert_array_equal(digit.x_train, parity.x_train)
    np.testing.assert_array_equal(digit.x_test, parity.x_test)
    np.testing.assert_array_equal(parity.y_train, digit.y_train % 2)  # digit -> parity
    np.testing.assert_array_equal(parity.y_test, digit.y_test % 2)
    assert not np.array_equal(digit.y_train, parity.y_train)
    # the same client in a one-task run holds the very same examples and split
    one = client_data(_digits(tasks_per_client=1), 0)
    np.testing.assert_array_equal(one.x_train, digit.x_train)
    np.testing.assert_array_equal(one.y_test, digit.y_test)


def test_input_shift_moves_a_clients_parts_alike() -> None:
    spec = _digits(input_shift="rotate", input_shift_strength=180.0, input_shift_groups=2)
    plain, shifted = build_federation(_digits()), build_federation(spec)
    levels = client_levels(6, 2, seed=0)
    for c, level in enumerate(levels):
        first, second = shifted[c]
        np.testing.assert_array_equal(first.x_train, second.x_train)
        np.testing.assert_array_equal(first.x_test, second.x_test)
        np.testing.assert_array_equal(second.y_train, plain[c][1].y_train)
        if level == 1.0:  # 180 degrees
            np.testing.assert_allclose(
                first.x_train, plain[c][0].x_train[..., ::-1, ::-1], atol=1e-5
            )


def test_client_data_refuses_a_several_task_client_and_client_tasks_gives_its_parts() -> None:
    spec = _digits()
    assert [p.task for p in client_tasks(spec, 4)] == ["parity", "ge5"]
    with pytest.raises(ValueError, match="tasks-per-client = 2"):
        client_data(spec, 4)
    with pytest.raises(IndexError):
        client_tasks(spec, 6)


def test_regression_task_with_dirichlet_on_a_shared_pool_still_works() -> None:
    spec = _digits(tasks=("digit", "digit-value"), num_clients=4, partitioner="dirichlet")
    for digit, value in build_federation(spec):
        np.testing.assert_array_equal(digit.x_train, value.x_train)
        assert value.y_train.dtype.kind == "f"


def _csv(path: Path, prefix: str, n: int, classes: int) -> Path:
    path.write_text("text,label\n" + "".join(f"{prefix}{i},{i % classes}\n" for i in range(n)))
    return path


def _files_spec(tmp_path: Path, **extra: Any) -> PartitionSpec:
    options = {
        "tasks": {
            "a": {"path": str(_csv(tmp_path / "a.csv", "a", 40, 2))},
            "b": {"path": str(_csv(tmp_path / "b.csv", "b", 30, 3))},
        }
    }
    values: dict[str, Any] = {
        "dataset": "files",
        "tasks": ("a", "b"),
        "num_clients": 3,
        "partitioner": "iid",
        "dataset_options": json.dumps(options, sort_keys=True),
    }
    values.update(extra)
    return PartitionSpec(**values)


def test_per_task_pools_give_each_holder_one_disjoint_share_of_each_task(tmp_path: Path) -> None:
    # a: clients 0, 1 (lists); b: clients 0, 2
    spec = _files_spec(
        tmp_path,
        task_assignment="lists",
        tasks_per_client=2,
        client_tasks=(("a", "b"), ("a",), ("b",)),
    )
    federation = build_federation(spec)
    assert [[p.task for p in parts] for parts in federation] == [["a", "b"], ["a"], ["b"]]
    for task, holders, size in (("a", (0, 1), 40), ("b", (0, 2), 30)):
        shares = []
        for c in holders:
            (part,) = [p for p in federation[c] if p.task == task]
            texts = part.x_train.tolist() + part.x_test.tolist()
            assert all(t.startswith(task) for t in texts)
            shares.append(set(texts))
        assert not shares[0] & shares[1]  # disjoint across holders
        assert len(shares[0] | shares[1]) == size  # the whole pool handed out
    assert len(federation[0][0].x_train) == 15 and len(federation[0][1].x_train) == 11


def test_natural_partitions_refuse_several_tasks_per_client(tmp_path: Path) -> None:
    with pytest.raises(PartitionError, match="set tasks-per-client = 1") as caught:
        build_federation(_files_spec(tmp_path, partitioner="natural", tasks_per_client=2))
    assert caught.value.key == "tasks-per-client"


def test_an_impossible_assignment_is_a_partition_error_naming_the_key() -> None:
    with pytest.raises(PartitionError) as caught:
        build_federation(_digits(task_assignment="counts"))
    assert caught.value.key == "task-assignment"


def test_check_client_tasks_checks_every_part() -> None:
    spec = _digits()
    dataset = spec.dataset_spec()
    digit, parity = client_tasks(spec, 0)
    check_client_tasks((digit, parity), dataset)
    with pytest.raises(DatasetContractError, match="holds a task twice"):
        check_client_tasks((digit, digit), dataset)
    bad = type(parity)(
        0, "parity", parity.x_train, parity.y_train + 5, parity.x_test, parity.y_test
    )
    with pytest.raises(DatasetContractError, match=r"client 0 \(parity\), train"):
        check_client_tasks((digit, bad), dataset)


def test_the_centralized_reference_pools_each_task_over_all_its_holders() -> None:
    federation = build_federation(_digits())
    parts = [p for client in federation for p in client]
    pooled = pool_training_data(parts, TASKS)
    for task in TASKS:
        holders = [p for p in parts if p.task == task]
        assert len(holders) == 4  # 6 clients x 2 tasks / 3 tasks
        assert len(pooled[task][1]) == sum(p.num_train for p in holders)


# --- devices and deployment files ------------------------------------------------

CFG = build_config({"tasks": list(TASKS), "num-clients": 6, "tasks-per-client": 2})


def test_deployment_files_one_per_client_and_task_read_back_by_the_device(tmp_path: Path) -> None:
    spec = partition_spec(CFG)
    devices = write_device_files(CFG, tmp_path, [0, 2])
    assert [d.tasks for d in devices] == [("digit", "parity"), ("digit", "ge5")]
    config = devices[1].node_config(tmp_path / "state")
    assert config["task"] == "digit,ge5"
    assert config["data-path-ge5"] == str(tmp_path / "node-2" / "data-ge5.npz")
    assert "data-path" not in config and config["client-id"] == 2
    dataset = spec.dataset_spec()
    for device in devices:
        parts = device_tasks(
            device.node_config(tmp_path / "state"),
            dataset,
            CFG.tasks,
            CFG.seed,
            CFG.test_fraction,
            99,
        )
        for read, partition in zip(parts, client_tasks(spec, device.client_id), strict=True):
            assert (read.client_id, read.task) == (partition.client_id, partition.task)
            labels = np.concatenate([partition.y_train, partition.y_test])
            got = np.concatenate([read.y_train, read.y_test])
            np.testing.assert_array_equal(np.sort(got), np.sort(labels))
    with pytest.raises(ValueError, match="holds tasks"):
        _ = devices[0].path


def test_a_deployment_of_several_task_nodes_runs_their_own_lists(tmp_path: Path) -> None:
    options = DeployOptions(workdir=tmp_path, nodes=2, overrides=("tasks-per-client=2",))
    values = LocalFederation(options).run_overrides()
    assert values["task-assignment"] == "lists"
    assert values["client-tasks"] == ["digit+parity", "parity+ge5"]
    assert values["tasks-per-client"] == 2 and values["num-clients"] == 2
    cfg = config_from_run_config(LocalFederation(options).run_config())  # what the apps build
    assert partition_spec(cfg).assignment() == (("digit", "parity"), ("parity", "ge5"))


def _device_files(tmp_path: Path) -> dict[str, str]:
    x = np.zeros((8, 1, 8, 8), dtype=np.float32)
    paths = {}
    for task, labels in (("digit", np.arange(8) % 10), ("parity", np.arange(8) % 2)):
        path = tmp_path / f"{task}.npz"
        np.savez(path, x=x, y=labels.astype(str))
        paths[f"data-path-{task}"] = str(path)
    return paths


def test_device_tasks_reads_one_file_per_task_in_run_order(tmp_path: Path) -> None:
    config = {"task": "parity, digit", **_device_files(tmp_path), "client-id": 5}
    dataset = partition_spec(CFG).dataset_spec()
    digit, parity = device_tasks(config, dataset, CFG.tasks, 0, 0.25, 7)
    assert (digit.task, parity.task, digit.client_id) == ("digit", "parity", 5)
    assert len(digit.y_train) == 6 and len(parity.y_test) == 2
    train, test = train_test_positions(np.arange(8), 0.25, 0, 5)  # each file split alike
    np.testing.assert_array_equal(digit.y_train, np.arange(8)[train])
    np.testing.assert_array_equal(parity.y_test, np.arange(8)[test] % 2)
    with pytest.raises(DeviceDataError, match=r"'task'.*device_tasks"):
        device_data(config, dataset, CFG.tasks, 0, 0.25, 7)


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        ({"task": "digit,mod3"}, "task", "'mod3' is not a task of this run"),
        ({"task": "digit,digit"}, "task", "lists a task twice"),
        ({"task": "digit,"}, "task", "empty task name"),
        ({"data-path-parity": None}, "data-path-parity", "one file per task"),
        ({"data-path-digit": "/nowhere.npz"}, "data-path-digit", "does not exist"),
    ],
)
def test_bad_several_task_node_config_names_the_key(
    tmp_path: Path, change: dict[str, Any], key: str, words: str
) -> None:
    config: dict[str, Any] = {"task": "digit,parity", **_device_files(tmp_path), **change}
    config = {k: v for k, v in config.items() if v is not None}
    dataset = partition_spec(CFG).dataset_spec()
    with pytest.raises(DeviceDataError, match=f"'{key}'") as caught:
        device_tasks(config, dataset, CFG.tasks, 0, 0.25, 7)
    assert caught.value.key == key and words in str(caught.value)
