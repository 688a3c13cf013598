"""Tests for the ``files`` dataset: users' own csv, jsonl, npz and image-folder data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fedmtl.data import get_dataset_spec
from fedmtl.data.federation import PartitionSpec
from fedmtl.data.files import read_labelled_file, sorted_labels
from fedmtl.data.registry import DatasetOptionError, DatasetSpec
from tests.federation_helpers import one_task_federation


def _csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    path.write_text(header + "\n" + "".join(f'"{t}",{label}\n' for t, label in rows))
    return path


def _jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (4, 3)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _image_folder(root: Path, size: tuple[int, int] = (4, 3)) -> Path:
    _png(root / "cat" / "a.png", (255, 0, 0), size)
    _png(root / "cat" / "b.png", (255, 0, 0), size)
    _png(root / "dog" / "c.png", (0, 0, 255), size)
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def _spec(tasks: dict[str, dict[str, Any]], **options: Any) -> DatasetSpec:
    return get_dataset_spec("files", {"tasks": tasks, **options})


def _task_y(spec: DatasetSpec, task: str) -> list[int]:
    assert spec.task_data is not None
    y: list[int] = spec.task_data(task).y.tolist()
    return y


# --- reading each format -------------------------------------------------------------


def test_csv_gives_texts_and_raw_labels(tmp_path: Path) -> None:
    path = _csv(tmp_path / "reviews.csv", [("good, really", "pos"), ("bad", " neg")])

    x, labels = read_labelled_file(path)

    assert x.dtype == object and x.tolist() == ["good, really", "bad"]
    assert labels == ["pos", "neg"]  # whitespace around a label is not part of it


def test_csv_with_other_column_names(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("id,body,topic\n1,hello,greet\n2,bye,leave\n")

    x, labels = read_labelled_file(path, text_column="body", label_column="topic")

    assert x.tolist() == ["hello", "bye"] and labels == ["greet", "leave"]


def test_jsonl_skips_blank_lines_and_reads_numbers_as_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "one", "label": 1}\n\n{"text": "two", "label": "x", "id": 7}\n')

    x, labels = read_labelled_file(path)

    assert x.tolist() == ["one", "two"] and labels == ["1", "x"]


def test_json_array_file_is_read_like_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "a", "label": "p"}, {"text": "b", "label": "q"}]))

    x, labels = read_labelled_file(path)

    assert x.tolist() == ["a", "b"] and labels == ["p", "q"]


def test_npz_gives_float32_inputs_of_their_shape(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, feats=np.arange(6, dtype=np.int32).reshape(3, 2), target=np.array([2, 0, 2]))

    x, labels = read_labelled_file(path, x_key="feats", y_key="target")

    assert x.dtype == np.float32 and x.shape == (3, 2)
    np.testing.assert_array_equal(x, [[0, 1], [2, 3], [4, 5]])
    assert labels == ["2", "0", "2"]


def test_image_folder_gives_nchw_in_unit_range_labelled_by_directory(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "pets")

    x, labels = read_labelled_file(root)

    assert x.dtype == np.float32 and x.shape == (3, 3, 3, 4)  # N, C, H, W; the .txt is skipped
    assert labels == ["cat", "cat", "dog"]
    np.testing.assert_array_equal(x[0, :, 0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(x[2, :, 0, 0], [0.0, 0.0, 1.0])


def test_image_folder_grayscale_and_resize(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "pets")

    x, _ = read_labelled_file(root, image_size=5, grayscale=True)

    assert x.shape == (3, 1, 5, 5)
    assert 0.0 < x.min() <= x.max() < 1.0  # pure red and blue are mid greys


def test_image_folder_of_mixed_sizes_needs_image_size(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "pets")
    _png(root / "dog" / "d.png", (0, 255, 0), size=(6, 6))

    with pytest.raises(ValueError, match=r"d\.png is 6x6 but .*a\.png is 4x3; set image-size"):
        read_labelled_file(root)
    assert read_labelled_file(root, image_size=4)[0].shape == (4, 3, 4, 4)


def test_sorted_labels_orders_integers_by_value() -> None:
    assert sorted_labels(["10", "9", "2", "10"]) == ("2", "9", "10")
    assert sorted_labels(["b", "a", "10", "9"]) == ("10", "9", "a", "b")


# --- the dataset ---------------------------------------------------------------------


def test_dataset_maps_sorted_labels_and_keeps_tasks_apart(tmp_path: Path) -> None:
    reviews = _csv(tmp_path / "r.csv", [("good", "pos"), ("bad", "neg"), ("fine", "pos")])
    news = _jsonl(
        tmp_path / "n.jsonl",
        [{"text": f"story {i}", "label": i % 11} for i in range(22)],
    )

    spec = _spec({"sentiment": {"path": str(reviews)}, "topic": {"path": str(news)}})

    assert spec.input_kind == "text" and spec.source_fraction == 0.0
    assert not spec.shared_inputs
    assert spec.tasks["sentiment"].labels == ("neg", "pos")
    assert spec.tasks["topic"].num_outputs == 11
    assert spec.tasks["topic"].labels[-2:] == ("9", "10")
    assert _task_y(spec, "sentiment") == [1, 0, 1]
    assert _task_y(spec, "topic")[9:12] == [9, 10, 0]


def test_explicit_labels_set_order_and_outputs(tmp_path: Path) -> None:
    reviews = _csv(tmp_path / "r.csv", [("good", "pos"), ("bad", "neg")])

    spec = _spec({"s": {"path": str(reviews), "labels": ["pos", "neutral", "neg"]}})

    assert spec.tasks["s"].num_outputs == 3
    assert spec.tasks["s"].labels == ("pos", "neutral", "neg")
    assert _task_y(spec, "s") == [0, 2]


def test_explicit_numeric_labels_match_the_file(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((3, 4)), y=np.array([3, 1, 3]))

    spec = _spec({"v": {"path": str(path), "labels": [3, 1]}})

    assert spec.input_kind == "vector"
    assert _task_y(spec, "v") == [0, 1, 0]


def test_label_outside_explicit_labels_names_file_value_and_allowed(tmp_path: Path) -> None:
    reviews = _csv(tmp_path / "r.csv", [("good", "pos"), ("meh", "neutral")])
    spec = _spec({"s": {"path": str(reviews), "labels": ["pos", "neg"]}})
    assert spec.task_data is not None

    with pytest.raises(
        ValueError, match=r"r\.csv: label 'neutral' is not in labels \['pos', 'neg'\]"
    ):
        spec.task_data("s")


def test_image_tasks_from_folders_and_4d_npz(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "pets")
    path = tmp_path / "more.npz"
    np.savez(path, x=np.ones((2, 3, 3, 4), dtype=np.float64), y=np.array(["a", "b"]))

    spec = _spec({"pets": {"path": str(root)}, "more": {"path": str(path)}})

    assert spec.input_kind == "image"
    assert spec.tasks["pets"].labels == ("cat", "dog")
    assert spec.task_data is not None
    assert spec.task_data("more").x.dtype == np.float32
    assert _task_y(spec, "pets") == [0, 0, 1]


def test_grayscale_option_reaches_the_image_folder(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "pets")

    spec = _spec({"pets": {"path": str(root), "image-size": 2}}, grayscale=True)

    assert spec.task_data is not None
    assert spec.task_data("pets").x.shape == (3, 1, 2, 2)


def test_files_federation_keeps_each_task_to_its_file(tmp_path: Path) -> None:
    a = _csv(tmp_path / "a.csv", [(f"a{i}", str(i % 2)) for i in range(40)])
    b = _csv(tmp_path / "b.csv", [(f"b{i}", str(i % 3)) for i in range(40)])
    options = {"tasks": {"a": {"path": str(a)}, "b": {"path": str(b)}}}
    spec = PartitionSpec(
        dataset="files",
        tasks=("a", "b"),
        num_clients=4,
        partitioner="iid",
        dataset_options=json.dumps(options, sort_keys=True),
    )

    clients = one_task_federation(spec)

    for client in clients:
        texts = client.x_train.tolist() + client.x_test.tolist()
        assert all(t.startswith(client.task) for t in texts)
        assert not set(client.x_train.tolist()) & set(client.x_test.tolist())
        labels = np.concatenate([client.y_train, client.y_test])
        assert labels.tolist() == [int(t[1:]) % (2 if client.task == "a" else 3) for t in texts]
    assert sum(len(c.x_train) + len(c.x_test) for c in clients) == 80


# --- errors --------------------------------------------------------------------------


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"

    with pytest.raises(FileNotFoundError, match=r"nope\.csv: no such file"):
        read_labelled_file(missing)
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        _spec({"t": {"path": str(missing)}})


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path / "d.csv", [("x", "y")], header="body,label")

    with pytest.raises(
        ValueError, match=r"d\.csv has no column 'text'; columns: \['body', 'label'\]"
    ):
        read_labelled_file(path)


def test_missing_jsonl_key_lists_the_keys(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": 1}, {"text": "b", "tag": 2}])

    with pytest.raises(
        ValueError, match=r"d\.jsonl, line 2: no key 'label'; keys present: \['tag'"
    ):
        read_labelled_file(path)


def test_missing_npz_array_lists_the_arrays(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((2, 2)), labels=np.array([0, 1]))

    with pytest.raises(ValueError, match=r"d\.npz has no array 'y'; arrays: \['x', 'labels'\]"):
        read_labelled_file(path)


def test_unknown_format_lists_the_allowed_ones(tmp_path: Path) -> None:
    path = _csv(tmp_path / "d.csv", [("a", "b")])
    odd = tmp_path / "d.parquet"
    odd.write_text("")

    with pytest.raises(DatasetOptionError, match=r"unknown format 'xml'; allowed: \['csv', "):
        _spec({"t": {"path": str(path), "format": "xml"}})
    with pytest.raises(DatasetOptionError, match=r"cannot infer the format from '\.parquet'"):
        _spec({"t": {"path": str(odd)}})
    with pytest.raises(ValueError, match=r"unknown format 'xml'; allowed: \['csv', 'jsonl', 'npz'"):
        read_labelled_file(path, fmt="xml")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "", r"a\.csv is empty"),
        ("b.csv", "text,label\n", r"b\.csv has a header but no rows"),
        ("c.jsonl", "\n\n", r"c\.jsonl is empty"),
    ],
)
def test_empty_files_are_refused(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)

    with pytest.raises(ValueError, match=message):
        read_labelled_file(tmp_path / name)


def test_empty_image_folder_and_npz_are_refused(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    np.savez(tmp_path / "e.npz", x=np.zeros((0, 2)), y=np.zeros(0))

    with pytest.raises(ValueError, match=r"imgs holds no images"):
        read_labelled_file(tmp_path / "imgs")
    with pytest.raises(ValueError, match=r"e\.npz is empty"):
        read_labelled_file(tmp_path / "e.npz")


def test_bad_content_names_file_and_line(tmp_path: Path) -> None:
    bad_json = tmp_path / "d.jsonl"
    bad_json.write_text('{"text": "a", "label": 1}\n{oops\n')
    bad_image = tmp_path / "imgs" / "cat" / "x.png"
    bad_image.parent.mkdir(parents=True)
    bad_image.write_text("not a png")

    with pytest.raises(ValueError, match=r"d\.jsonl, line 2: not valid JSON"):
        read_labelled_file(bad_json)
    with pytest.raises(ValueError, match=r"x\.png: not a readable image"):
        read_labelled_file(tmp_path / "imgs")


def test_tasks_of_different_input_kinds_are_refused(tmp_path: Path) -> None:
    reviews = _csv(tmp_path / "r.csv", [("good", "pos")])
    root = _image_folder(tmp_path / "pets")

    with pytest.raises(DatasetOptionError, match="one input kind, got p: image, s: text"):
        _spec({"s": {"path": str(reviews)}, "p": {"path": str(root)}})


def test_npz_of_another_rank_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((2, 3, 4)), y=np.array([0, 1]))

    with pytest.raises(DatasetOptionError, match=r"d\.npz: npz inputs of shape \(2, 3, 4\)"):
        _spec({"t": {"path": str(path)}})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs option 'tasks'"),
        ({"tasks": {"t": {}}}, "tasks.t needs 'path'"),
        ({"tasks": {"t": "a.csv"}}, "tasks.t must be a table"),
        ({"tasks": {"t": {"path": "a.csv", "colour": 1}}}, "no key 'colour'; allowed: \\['path'"),
        ({"tasks": {"t": {"path": "a.csv", "image-size": 0}}}, "image-size must be a positive"),
        ({"tasks": {"t": {"path": "a.csv", "labels": ["a", "a"]}}}, "more than once"),
        ({"tasks": {"t": {"path": "a.csv", "labels": []}}}, "labels must be a non-empty list"),
        ({"tasks": {"t": {"path": "a.csv", "text-column": ""}}}, "text-column must be"),
        ({"tasks": {"t": {"path": "a.csv"}}, "grayscale": "yes"}, "'grayscale' must be true"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(DatasetOptionError, match=message):
        get_dataset_spec("files", options)


def test_explicit_labels_make_the_build_read_nothing(tmp_path: Path) -> None:
    # A server needs only the label count; the file may live on the devices alone.
    spec = _spec({"t": {"path": str(tmp_path / "later.csv"), "labels": ["a", "b"]}})

    assert spec.tasks["t"].num_outputs == 2 and spec.input_kind == "text"
    assert spec.task_data is not None
    with pytest.raises(FileNotFoundError, match=r"later\.csv"):
        spec.task_data("t")
