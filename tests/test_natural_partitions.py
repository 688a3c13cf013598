"""Natural partitions: one client per writer of a ``files`` task (``partitioner = "natural"``)."""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedmtl.config import ConfigError, build_config, partition_spec
from fedmtl.data.federation import ClientData, PartitionSpec
from fedmtl.data.partition_spec import min_split_examples, num_test_examples
from fedmtl.data.partitioners import PartitionError, partition_indices, sorted_client_ids
from fedmtl.data.registry import DatasetOptionError
from fedmtl.run_model import check_run_inputs
from tests.federation_helpers import one_task_federation

WRITERS = 30


def _writers_csv(path: Path, writers: int = WRITERS, rows_of: Any = None) -> dict[str, set[str]]:
    """A csv of ``writers`` writers (ids ``w0``.. written shuffled); returns each writer's texts."""
    rows_of = rows_of or (lambda w: 3 + w % 4)  # 3 to 6 rows each
    rows = [
        (f"w{w}", f"writer {w} text {i}", str((w + i) % 2))
        for w in range(writers)
        for i in range(rows_of(w))
    ]
    order = np.random.default_rng(5).permutation(len(rows))
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["writer", "text", "label"])
        out.writerows(rows[i] for i in order)
    texts: dict[str, set[str]] = {}
    for writer, text, _ in rows:
        texts.setdefault(writer, set()).add(text)
    return texts


def _options(path: Path, column: str = "writer") -> dict[str, Any]:
    return {"tasks": {"notes": {"path": str(path), "client-column": column}}}


def _spec(path: Path, num_clients: int = WRITERS, **extra: Any) -> PartitionSpec:
    options = extra.pop("options", None) or _options(path)
    return PartitionSpec(
        dataset="files",
        tasks=tuple(options["tasks"]),
        num_clients=num_clients,
        partitioner="natural",
        dataset_options=json.dumps(options, sort_keys=True),
        **extra,
    )


def _texts(client: ClientData) -> list[str]:
    return [*client.x_train.tolist(), *client.x_test.tolist()]


def _config(path: Path, **values: Any) -> dict[str, Any]:
    return {
        "dataset": "files",
        "dataset-options": _options(path),
        "tasks": ["notes"],
        "num-clients": WRITERS,
        "partitioner": "natural",
        "backbone": "text-bow",
        "pretrained": "none",
        **values,
    }


# ---------------------------------------------------------------- one client per writer


def test_a_csv_of_30_writers_gives_30_clients_each_with_exactly_its_rows(tmp_path: Path) -> None:
    # Prepare: 30 writers, 3..6 rows each, rows shuffled in the file
    texts = _writers_csv(tmp_path / "notes.csv")

    # Execute
    clients = one_task_federation(_spec(tmp_path / "notes.csv"))

    # Assert: client i holds writer sorted_client_ids[i]'s rows, train + test, nothing else
    assert len(clients) == WRITERS
    writers = sorted(texts)  # "w0", "w1", "w10", ...: ids that are not integers sort as text
    for client, writer in zip(clients, writers, strict=True):
        assert client.task == "notes"
        assert sorted(_texts(client)) == sorted(texts[writer])
        assert len(client.x_test) == num_test_examples(len(texts[writer]), 0.25) >= 1
        assert len(client.x_train) >= 1
        labels = np.concatenate([client.y_train, client.y_test]).tolist()
        w = int(writer[1:])
        assert labels == [(w + int(t.rsplit(" ", 1)[1])) % 2 for t in _texts(client)]
    assert sum(len(_texts(c)) for c in clients) == sum(3 + w % 4 for w in range(WRITERS))


def test_integer_ids_number_clients_by_value(tmp_path: Path) -> None:
    assert sorted_client_ids(["10", "9", "1", "9"]) == ("1", "9", "10")
    assert sorted_client_ids(["b", "a10", "a9"]) == ("a10", "a9", "b")
    path = tmp_path / "n.jsonl"
    records = [
        {"text": f"u{u} {i}", "label": i % 2, "user": u} for u in (10, 9, 2) for i in range(4)
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    options = {"tasks": {"n": {"path": str(path), "client-column": "user"}}}

    clients = one_task_federation(_spec(path, num_clients=3, options=options))

    assert [{t.split()[0] for t in _texts(c)} for c in clients] == [{"u2"}, {"u9"}, {"u10"}]


def test_npz_client_array(tmp_path: Path) -> None:
    path = tmp_path / "v.npz"
    x = np.arange(24, dtype=np.float32).reshape(12, 2)
    np.savez(path, x=x, y=np.arange(12) % 3, site=np.repeat(["s1", "s0", "s2"], 4))
    options = {"tasks": {"v": {"path": str(path), "client-column": "site"}}}

    clients = one_task_federation(_spec(path, num_clients=3, options=options))

    for client, rows in zip(clients, ([4, 5, 6, 7], [0, 1, 2, 3], [8, 9, 10, 11]), strict=True):
        got = np.concatenate([client.x_train, client.x_test])[:, 0] // 2
        assert sorted(got.astype(int).tolist()) == rows


def test_the_train_test_split_stays_seeded(tmp_path: Path) -> None:
    _writers_csv(tmp_path / "notes.csv")
    build = partial(one_task_federation, cached=False)

    first = build(_spec(tmp_path / "notes.csv", seed=1))
    again = build(_spec(tmp_path / "notes.csv", seed=1))
    other = build(_spec(tmp_path / "notes.csv", seed=2))

    assert [c.x_test.tolist() for c in first] == [c.x_test.tolist() for c in again]
    assert [c.x_test.tolist() for c in first] != [c.x_test.tolist() for c in other]
    assert [sorted(_texts(c)) for c in first] == [sorted(_texts(c)) for c in other]


def test_two_tasks_number_their_clients_task_by_task(tmp_path: Path) -> None:
    # Prepare: writer w1 appears in both files, yet a client holds one task
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _writers_csv(a, writers=3)
    _writers_csv(b, writers=2)
    options = {
        "tasks": {
            "a": {"path": str(a), "client-column": "writer"},
            "b": {"path": str(b), "client-column": "writer"},
        }
    }

    clients = one_task_federation(
        _spec(
            a,
            num_clients=5,
            options=options,
            task_assignment="counts",
            task_counts=(("a", 3), ("b", 2)),
        )
    )

    assert [c.task for c in clients] == ["a", "a", "a", "b", "b"]
    owners = [{t.split(" text")[0] for t in _texts(c)} for c in clients]
    assert owners == [{"writer 0"}, {"writer 1"}, {"writer 2"}, {"writer 0"}, {"writer 1"}]


def test_a_natural_config_builds_and_passes_the_run_checks(tmp_path: Path) -> None:
    _writers_csv(tmp_path / "notes.csv")
    cfg = build_config(_config(tmp_path / "notes.csv"))

    clients = one_task_federation(partition_spec(cfg))
    check_run_inputs(cfg)

    assert len(clients) == cfg.num_clients == WRITERS


def test_split_sizes() -> None:
    assert [num_test_examples(n, 0.25) for n in (1, 2, 3, 4, 6)] == [0, 1, 1, 1, 2]
    assert min_split_examples(0.25) == 2
    assert min_split_examples(0.5) == 2  # round(1.0) = 1 test, 1 train
    assert min_split_examples(0.75) == 3  # 2 examples: round(1.5) = 2 tests, no train
    # 0.9 n rounds to n for n = 2, 3, 4 (1.8, 2.7, 3.6); round(4.5) = 4 (half to even)
    assert min_split_examples(0.9) == 5


# ---------------------------------------------------------------- errors name the key


def test_num_clients_must_be_the_number_of_writers(tmp_path: Path) -> None:
    _writers_csv(tmp_path / "notes.csv")
    cfg = build_config(_config(tmp_path / "notes.csv", **{"num-clients": 12}))

    with pytest.raises(ConfigError, match="set num-clients = 30") as caught:
        check_run_inputs(cfg)

    assert caught.value.key == "num-clients"


def test_a_missing_client_column_is_named_with_the_columns(tmp_path: Path) -> None:
    _writers_csv(tmp_path / "notes.csv")
    values = _config(tmp_path / "notes.csv")
    values["dataset-options"] = _options(tmp_path / "notes.csv", column="author")

    with pytest.raises(ConfigError, match=r"no client-column 'author'.*'writer'") as caught:
        check_run_inputs(build_config(values))

    assert caught.value.key == "dataset-options"


def test_a_writer_with_too_few_rows_for_a_split_is_named(tmp_path: Path) -> None:
    _writers_csv(tmp_path / "notes.csv", rows_of=lambda w: 1 if w == 7 else 3)
    cfg = build_config(_config(tmp_path / "notes.csv"))

    with pytest.raises(ConfigError, match=r"'w7' \(1\)") as caught:
        check_run_inputs(cfg)

    assert caught.value.key == "dataset-options"
    assert "test-fraction" in str(caught.value)


def test_natural_needs_client_ids(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="client-column") as caught:
        check_run_inputs(build_config({"partitioner": "natural"}))  # digits: no writers
    assert caught.value.key == "partitioner"

    _writers_csv(tmp_path / "notes.csv")
    values = _config(tmp_path / "notes.csv")
    values["dataset-options"] = {"tasks": {"notes": {"path": str(tmp_path / "notes.csv")}}}
    with pytest.raises(ConfigError, match=r"tasks\.notes\.client-column") as caught:
        check_run_inputs(build_config(values))
    assert caught.value.key == "partitioner"


def test_several_tasks_need_their_counts(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _writers_csv(a, writers=3)
    _writers_csv(b, writers=2)
    options = {
        "tasks": {
            "a": {"path": str(a), "client-column": "writer"},
            "b": {"path": str(b), "client-column": "writer"},
        }
    }

    with pytest.raises(PartitionError, match=r"task-counts = \{a = 3, b = 2\}") as caught:
        one_task_federation(_spec(a, num_clients=5, options=options))  # round-robin
    assert caught.value.key == "task-assignment"

    with pytest.raises(PartitionError, match="a: 3, b: 2") as caught:
        one_task_federation(_spec(a, num_clients=6, options=options))
    assert caught.value.key == "num-clients"

    counts = (("a", 2), ("b", 3))
    with pytest.raises(PartitionError) as caught:
        one_task_federation(
            _spec(a, num_clients=5, options=options, task_assignment="counts", task_counts=counts)
        )
    assert caught.value.key == "task-counts"


def test_partition_indices_checks_ids_itself() -> None:
    labels = np.zeros(6, dtype=np.int64)
    spec = PartitionSpec(dataset="files", tasks=("t",), num_clients=3, partitioner="natural")

    parts = partition_indices(labels, spec, ["b", "a", "c", "a", "b", "c"])
    assert [p.tolist() for p in parts] == [[1, 3], [0, 4], [2, 5]]
    with pytest.raises(PartitionError) as caught:
        partition_indices(labels, spec)
    assert caught.value.key == "partitioner"
    with pytest.raises(PartitionError, match="set num-clients = 2"):
        partition_indices(labels, spec, ["a", "a", "a", "b", "b", "b"])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"path": "x/", "format": "image-folder", "client-column": "w"}, "client-column needs"),
        ({"path": "a.csv", "client-column": ""}, "client-column must be a non-empty string"),
    ],
)
def test_bad_client_column_options(table: dict[str, Any], message: str) -> None:
    from fedmtl.data.files import parse_file_task

    with pytest.raises(DatasetOptionError, match=message):
        parse_file_task("t", table)


def test_an_empty_client_id_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("writer,text,label\nw1,a,0\n,b,1\n")
    values = _config(path, **{"num-clients": 1})

    with pytest.raises(ConfigError, match="line 3: empty or non-scalar client id") as caught:
        check_run_inputs(build_config(values))
    assert caught.value.key == "dataset-options"


# ---------------------------------------------------------------- a directory, one file per client


def _client_dir(root: Path, rows: dict[str, int]) -> Path:
    root.mkdir()
    for client, n in rows.items():
        lines = [f"{client} says {i},{i % 2}" for i in range(n)]
        (root / f"{client}.csv").write_text("text,label\n" + "\n".join(lines) + "\n")
    (root / ".hidden.csv").write_text("text,label\nnot me,0\n")
    (root / "notes.txt").write_text("not a client file")
    return root


def test_a_directory_of_client_files_gives_one_client_per_file(tmp_path: Path) -> None:
    # Prepare: 3 files; ids are the file names without suffix, numbered by value
    root = _client_dir(tmp_path / "writers", {"10": 4, "2": 3, "7": 5})
    options = {"tasks": {"notes": {"path": str(root), "client-files": True}}}

    clients = one_task_federation(_spec(root, num_clients=3, options=options))

    owners = [{t.split()[0] for t in _texts(c)} for c in clients]
    assert owners == [{"2"}, {"7"}, {"10"}]
    assert [len(_texts(c)) for c in clients] == [3, 5, 4]
    assert sorted(_texts(clients[0])) == ["2 says 0", "2 says 1", "2 says 2"]


def test_client_files_config_runs_its_checks(tmp_path: Path) -> None:
    root = _client_dir(tmp_path / "writers", {f"u{i}": 3 for i in range(4)})
    values = _config(root, **{"num-clients": 4})
    values["dataset-options"] = {"tasks": {"notes": {"path": str(root), "client-files": True}}}

    check_run_inputs(build_config(values))
    with pytest.raises(ConfigError, match="set num-clients = 4") as caught:
        check_run_inputs(build_config({**values, "num-clients": 5}))
    assert caught.value.key == "num-clients"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"client-files": "yes"}, "client-files must be true or false"),
        ({"client-files": True, "client-column": "w"}, "and no client-column"),
        ({"client-files": True, "format": "image-folder"}, "client-files takes a directory"),
    ],
)
def test_bad_client_files_options(tmp_path: Path, table: dict[str, Any], message: str) -> None:
    from fedmtl.data.files import parse_file_task

    root = _client_dir(tmp_path / "w", {"a": 2})
    with pytest.raises(DatasetOptionError, match=message):
        parse_file_task("t", {"path": str(root), **table})


def test_client_files_need_a_directory_of_one_format(tmp_path: Path) -> None:
    from fedmtl.data.files import parse_file_task

    with pytest.raises(DatasetOptionError, match="needs path to be a directory"):
        parse_file_task("t", {"path": str(tmp_path / "none"), "client-files": True})
    root = _client_dir(tmp_path / "w", {"a": 2})
    (root / "b.jsonl").write_text('{"text": "x", "label": 0}\n')
    with pytest.raises(DatasetOptionError, match=r"found \['csv', 'jsonl'\]"):
        parse_file_task("t", {"path": str(root), "client-files": True})
    assert parse_file_task("t", {"path": str(root), "client-files": True, "format": "csv"})
