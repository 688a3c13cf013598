"""Dataset ``files``: the user's own labelled files, one file (or image folder) per task.

``dataset-options = {tasks = {sentiment = {path = "reviews.csv"}, topic = {path =
"news.jsonl", labels = ["sport", "politics"]}}}`` gives two tasks with their own inputs.
Formats: ``csv`` and ``jsonl`` (a text and a label column), ``npz`` (arrays ``x`` and
``y``) and ``image-folder`` (one sub-directory of images per class). The format is
inferred from the path unless given. Labels map to ``0..C-1`` in the order of the
task's ``labels`` list, by default the sorted distinct labels of the file.

A task's ``client-column`` (a csv column, jsonl key or npz array) gives each
example's client id, for the ``natural`` partitioner: one client per distinct id.
With ``client-files = true`` the task's ``path`` is a directory of files of one
format, one per client: a file's name without its suffix is its rows' client id.

A task's ``kind`` (a name in :data:`fedmtl.task_kinds.TASK_KINDS`) is
``classification`` by default; with ``regression`` the label column holds finite
numbers, read as floats, and the task is standardized with its pool's mean and
std (:func:`fedmtl.data.registry.regression_task`).
"""

from __future__ import annotations

import csv
import json
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmtl.data.registry import (
    DATASETS,
    BaseData,
    DatasetEntry,
    DatasetOptionError,
    DatasetSpec,
    TaskSpec,
    identity_labels,
    regression_task,
)
from fedmtl.registry import RegistryError
from fedmtl.task_kinds import TASK_KINDS

NAME = "files"
FORMATS = ("csv", "jsonl", "npz", "image-folder")
TASK_KEYS = (
    "path",
    "format",
    "text-column",
    "label-column",
    "x-key",
    "y-key",
    "image-size",
    "labels",
    "client-column",
    "client-files",
    "kind",
)
# Formats that can carry a client-id column (an image folder has no columns).
# They are also the formats with a label column, which a regression needs.
CLIENT_COLUMN_FORMATS = ("csv", "jsonl", "npz")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_SUFFIX_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".npz": "npz"}


def infer_format(path: str | Path) -> str:
    """Return the format of ``path``: a directory is an image folder, else by suffix.

    Raises
    ------
    ValueError
        If the suffix names no known format.
    """
    path = Path(path)
    if path.is_dir():
        return "image-folder"
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: cannot infer the format from {path.suffix or 'no suffix'!r}; "
            f"set format to one of {list(FORMATS)}"
        )
    return fmt


def read_labelled_file(
    path: str | Path,
    fmt: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    x_key: str = "x",
    y_key: str = "y",
    image_size: int | None = None,
    grayscale: bool = False,
) -> tuple[npt.NDArray[Any], list[str]]:
    """Read one labelled file into inputs and raw labels.

    Parameters
    ----------
    path : str or Path
        The file, or for ``image-folder`` the directory with one sub-directory per class.
    fmt : str, optional
        ``"csv"``, ``"jsonl"``, ``"npz"`` or ``"image-folder"``; inferred when ``None``.
    text_column, label_column : str
        Columns (csv) or keys (jsonl) of the text and the label.
    x_key, y_key : str
        Array names of the inputs and labels in an ``npz`` file.
    image_size : int, optional
        Resize images to ``image_size x image_size``; else they must share one size.
    grayscale : bool
        Read images as one grey channel instead of RGB.

    Returns
    -------
    x : ndarray
        Texts as an object array of ``str``; images as float32 ``(N, C, H, W)`` in
        [0, 1]; ``npz`` inputs as float32 of their stored shape.
    labels : list of str
        The raw label of each example (for an image folder, its directory's name).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For an unknown format, a missing column or array, an empty file or unreadable
        content; the message names the file.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    fmt = fmt or infer_format(path)
    if fmt == "csv":
        return _read_csv(path, text_column, label_column)
    if fmt == "jsonl":
        return _read_jsonl(path, text_column, label_column)
    if fmt == "npz":
        return _read_npz(path, x_key, y_key)
    if fmt == "image-folder":
        return _read_image_folder(path, image_size, grayscale)
    raise ValueError(f"{path}: unknown format {fmt!r}; allowed: {list(FORMATS)}")


def sorted_labels(raw: Iterable[str]) -> tuple[str, ...]:
    """Return the distinct labels in order: by value when all are integers, else as text."""
    unique = set(raw)
    try:
        # Integers sort by value so "10" follows "9", not "1".
        return tuple(sorted(unique, key=lambda label: (int(label), label)))
    except ValueError:
        return tuple(sorted(unique))


def label_ids(raw: list[str], labels: tuple[str, ...], path: str | Path) -> npt.NDArray[np.int64]:
    """Map raw labels to their index in ``labels``.

    Raises
    ------
    ValueError
        Naming ``path``, the first label not in ``labels`` and the allowed labels.
    """
    index = {label: i for i, label in enumerate(labels)}
    unknown = next((label for label in raw if label not in index), None)
    if unknown is not None:
        raise ValueError(f"{path}: label {unknown!r} is not in labels {list(labels)}")
    return np.asarray([index[label] for label in raw], dtype=np.int64)


def numeric_targets(raw: list[str], path: str | Path, column: str) -> npt.NDArray[np.float64]:
    """Read raw labels as the finite numbers of a regression task.

    Raises
    ------
    ValueError
        Naming ``path``, the label ``column`` and the first row (1-based, header not
        counted) whose value is not a finite number.
    """
    values: list[float] = []
    for row, label in enumerate(raw, start=1):
        try:
            value = float(label)
        except ValueError:
            value = float("nan")
        if not np.isfinite(value):
            raise ValueError(
                f"{path}, row {row}: label column {column!r} holds {label!r}, "
                "not a finite number (a regression task needs numeric targets)"
            )
        values.append(value)
    return np.asarray(values, dtype=np.float64)


def task_targets(
    kind: str, raw: list[str], labels: tuple[str, ...], path: str | Path, column: str
) -> npt.NDArray[Any]:
    """A task's targets from its raw labels: class ids, or floats for a ``regression``.

    Raises
    ------
    ValueError
        From :func:`label_ids` or :func:`numeric_targets`.
    """
    if kind == "regression":
        return numeric_targets(raw, path, column)
    return label_ids(raw, labels, path)


def input_kind(fmt: str, x: npt.NDArray[Any] | None = None) -> str:
    """Return ``"text"``, ``"image"`` or ``"vector"`` for a format (npz: by ``x``'s rank).

    Raises
    ------
    ValueError
        For ``npz`` inputs that are neither 2-D (vectors) nor 4-D (images).
    """
    if fmt in ("csv", "jsonl"):
        return "text"
    if fmt == "image-folder":
        return "image"
    if fmt == "npz" and x is not None and x.ndim in (2, 4):
        return "vector" if x.ndim == 2 else "image"
    shape = "unknown" if x is None else str(x.shape)
    raise ValueError(
        f"{fmt} inputs of shape {shape} have no input kind; "
        "expected 2-D (N, features) or 4-D images (N, C, H, W)"
    )


@dataclass(frozen=True)
class FileTask:
    """One task of the ``files`` dataset, as given in ``dataset-options``."""

    name: str
    path: str
    format: str
    text_column: str = "text"
    label_column: str = "label"
    x_key: str = "x"
    y_key: str = "y"
    image_size: int | None = None
    labels: tuple[str, ...] = ()
    client_column: str | None = None
    client_files: bool = False
    kind: str = "classification"

    @property
    def target_column(self) -> str:
        """The column (csv), key (jsonl) or array (npz) holding the labels."""
        return self.y_key if self.format == "npz" else self.label_column


def parse_file_task(name: str, table: Any) -> FileTask:
    """Check one entry of the ``tasks`` option and return it as a :class:`FileTask`.

    Raises
    ------
    DatasetOptionError
        For an unknown key, a missing ``path``, an unknown format or a bad value.
    """
    where = f"dataset option tasks.{name}"
    if not isinstance(table, Mapping):
        raise DatasetOptionError(f'{where} must be a table such as {{path = "data.csv"}}')
    unknown = sorted(set(table) - set(TASK_KEYS))
    if unknown:
        raise DatasetOptionError(f"{where} has no key {unknown[0]!r}; allowed: {list(TASK_KEYS)}")
    path = table.get("path")
    if not isinstance(path, str) or not path:
        raise DatasetOptionError(f"{where} needs 'path', the file or image folder")
    fmt = table.get("format")
    client_files = table.get("client-files", False)
    if not isinstance(client_files, bool):
        raise DatasetOptionError(
            f"{where}: client-files must be true or false, not {client_files!r}"
        )
    if client_files and fmt is None:
        fmt = _client_files_format(Path(path).expanduser(), where)
    elif fmt is None:
        try:
            fmt = infer_format(Path(path).expanduser())
        except ValueError as error:
            raise DatasetOptionError(f"{where}: {error}") from None
    elif fmt not in FORMATS:
        raise DatasetOptionError(f"{where}: unknown format {fmt!r}; allowed: {list(FORMATS)}")
    names = {
        k: _name(table, k, where)
        for k in ("text-column", "label-column", "x-key", "y-key", "client-column")
    }
    if client_files and (names["client-column"] is not None or fmt not in CLIENT_COLUMN_FORMATS):
        raise DatasetOptionError(
            f"{where}: client-files takes a directory of {list(CLIENT_COLUMN_FORMATS)} files, "
            "one per client (named by client id), and no client-column"
        )
    if names["client-column"] is not None and fmt not in CLIENT_COLUMN_FORMATS:
        raise DatasetOptionError(
            f"{where}: client-column needs a file with columns ({list(CLIENT_COLUMN_FORMATS)}), "
            f"not {fmt!r}"
        )
    kind = _kind_option(table.get("kind", "classification"), name)
    if kind == "regression" and (fmt not in CLIENT_COLUMN_FORMATS or "labels" in table):
        raise DatasetOptionError(
            f"{where}: a regression task reads numbers from a label column "
            f"({list(CLIENT_COLUMN_FORMATS)} files) and takes no labels list"
        )
    size = table.get("image-size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise DatasetOptionError(f"{where}: image-size must be a positive integer, got {size!r}")
    return FileTask(
        name=name,
        path=path,
        format=fmt,
        text_column=names["text-column"] or "text",
        label_column=names["label-column"] or "label",
        x_key=names["x-key"] or "x",
        y_key=names["y-key"] or "y",
        image_size=size,
        labels=_labels_option(table.get("labels"), where),
        client_column=names["client-column"],
        client_files=client_files,
        kind=kind,
    )


def build_files_dataset(options: Mapping[str, Any]) -> DatasetSpec:
    """Return the ``files`` spec for ``dataset-options``.

    A task without an explicit ``labels`` list, and any ``npz`` task (for its input
    kind), is read here; the reads are cached for the task data.

    Raises
    ------
    DatasetOptionError
        For a bad ``tasks`` table or ``grayscale`` value, tasks of different input kinds,
        or a regression task's label that is not a finite number.
    FileNotFoundError, ValueError
        From reading a file (see :func:`read_labelled_file`).
    """
    tables = options.get("tasks")
    if not isinstance(tables, Mapping) or not tables:
        raise DatasetOptionError(
            "dataset 'files' needs option 'tasks', e.g. "
            'dataset-options = {tasks = {mytask = {path = "data.csv"}}}'
        )
    grayscale = options.get("grayscale", False)
    if not isinstance(grayscale, bool):
        raise DatasetOptionError(
            f"dataset option 'grayscale' must be true or false, not {grayscale!r}"
        )
    file_tasks = [parse_file_task(str(name), table) for name, table in tables.items()]

    kinds: dict[str, str] = {}
    tasks: dict[str, TaskSpec] = {}
    for task in file_tasks:
        x = _read_task(task, grayscale).x if task.format == "npz" else None
        try:
            kinds[task.name] = input_kind(task.format, x)
        except ValueError as error:
            raise DatasetOptionError(f"task {task.name!r}, {task.path}: {error}") from None
        if task.kind == "regression":
            tasks[task.name] = regression_task(
                task.name,
                _regression_targets(task, grayscale),
                description=f"{task.format} {task.path}, regression on {task.target_column!r}",
            )
            continue
        labels = task.labels or sorted_labels(_read_task(task, grayscale).raw)
        tasks[task.name] = TaskSpec(
            task.name,
            len(labels),
            identity_labels,
            description=f"{task.format} {task.path}, {len(labels)} labels",
            labels=labels,
        )
    if len(set(kinds.values())) > 1:
        found = ", ".join(f"{name}: {kind}" for name, kind in kinds.items())
        raise DatasetOptionError(f"dataset 'files': all tasks need one input kind, got {found}")
    by_name = {task.name: task for task in file_tasks}

    @lru_cache(maxsize=len(by_name))
    def task_data(name: str) -> BaseData:
        task = by_name[name]
        read = _read_task(task, grayscale)
        x = read.x
        y: npt.NDArray[Any]
        if task.kind == "regression":
            y = _regression_targets(task, grayscale)
        else:
            y = label_ids(list(read.raw), tasks[name].labels, task.path)
        if read.client_ids is not None:
            return BaseData(x=x, y=y, client_ids=read.client_ids)
        if task.client_column is None:
            return BaseData(x=x, y=y)
        ids = read_client_column(task.path, task.format, task.client_column)
        if len(ids) != len(y):
            raise ValueError(
                f"{task.path}: {len(ids)} values of client-column {task.client_column!r} "
                f"for {len(y)} examples"
            )
        return BaseData(x=x, y=y, client_ids=ids)

    return DatasetSpec(
        name=NAME,
        tasks=tasks,
        task_data=task_data,
        input_kind=next(iter(kinds.values())),
        # The user's files are all client data; a backbone is pretrained elsewhere.
        source_fraction=0.0,
    )


@dataclass(frozen=True)
class _TaskRead:
    x: npt.NDArray[Any]
    raw: tuple[str, ...]
    client_ids: tuple[str, ...] | None = None  # with client-files: each row's file
    sources: tuple[tuple[str, int], ...] = ()  # each file read and its number of rows


@lru_cache(maxsize=8)
def _read_task(task: FileTask, grayscale: bool) -> _TaskRead:
    # Cached so the build (labels, npz rank) and the task data read each file once.
    def read(path: str | Path) -> tuple[npt.NDArray[Any], list[str]]:
        return read_labelled_file(
            path,
            task.format,
            text_column=task.text_column,
            label_column=task.label_column,
            x_key=task.x_key,
            y_key=task.y_key,
            image_size=task.image_size,
            grayscale=grayscale,
        )

    if not task.client_files:
        x, raw = read(task.path)
        return _TaskRead(x, tuple(raw), sources=((task.path, len(raw)),))
    xs: list[npt.NDArray[Any]] = []
    raws: list[str] = []
    ids: list[str] = []
    sources: list[tuple[str, int]] = []
    for file in client_file_paths(task.path, task.format):
        x, raw = read(file)
        if xs and x.shape[1:] != xs[0].shape[1:]:
            raise ValueError(f"{file}: inputs of shape {x.shape[1:]}, not {xs[0].shape[1:]}")
        xs.append(x)
        raws.extend(raw)
        ids.extend([file.stem] * len(raw))
        sources.append((str(file), len(raw)))
    return _TaskRead(np.concatenate(xs), tuple(raws), tuple(ids), tuple(sources))


def _regression_targets(task: FileTask, grayscale: bool) -> npt.NDArray[np.float64]:
    # File by file, so an error names the file and its row, and the task.
    read = _read_task(task, grayscale)
    parts: list[npt.NDArray[np.float64]] = []
    start = 0
    for path, count in read.sources:
        try:
            parts.append(
                numeric_targets(list(read.raw[start : start + count]), path, task.target_column)
            )
        except ValueError as error:
            # A bad value for the task's kind: the dataset-options entry to fix.
            raise DatasetOptionError(f"task {task.name!r}: {error}") from None
        start += count
    return np.concatenate(parts)


def client_file_paths(directory: str | Path, fmt: str) -> list[Path]:
    """The files of a ``client-files`` directory in ``fmt``, sorted by name; one per client.

    Raises
    ------
    FileNotFoundError
        If ``directory`` does not exist.
    ValueError
        For a directory with no such files, or two files of one client id (stem).
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory (client-files needs one)")
    files = sorted(
        p
        for p in directory.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and _SUFFIX_FORMATS.get(p.suffix.lower()) == fmt
    )
    if not files:
        raise ValueError(f"{directory} holds no {fmt} files (client-files: one per client)")
    stems = [p.stem for p in files]
    twice = sorted({stem for stem in stems if stems.count(stem) > 1})
    if twice:
        raise ValueError(f"{directory}: client id {twice[0]!r} has more than one file")
    return files


def _client_files_format(directory: Path, where: str) -> str:
    if not directory.is_dir():
        raise DatasetOptionError(
            f"{where}: client-files needs path to be a directory, one file per client"
        )
    found = {
        _SUFFIX_FORMATS[p.suffix.lower()]
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _SUFFIX_FORMATS
    }
    if len(found) != 1:
        raise DatasetOptionError(
            f"{where}: client-files infers the format from the files in {directory}, found "
            f"{sorted(found) or 'none'}; set format to one of {list(CLIENT_COLUMN_FORMATS)}"
        )
    return found.pop()


def read_client_column(path: str | Path, fmt: str, column: str) -> tuple[str, ...]:
    """Read the client id of every example of a csv, jsonl or npz file, as text.

    Rows are read as :func:`read_labelled_file` reads them (jsonl blank lines
    skipped), so the ids line up with its examples.

    Raises
    ------
    ValueError
        Naming the file, for a missing column, key or array (listing those present),
        an empty or non-scalar id, or a format without columns.
    """
    path = Path(path).expanduser()
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if column not in columns:
                raise ValueError(
                    f"{path} has no client-column {column!r}; columns: {list(columns)}"
                )
            return tuple(
                _client_id(row[column], f"{path}, line {reader.line_num}") for row in reader
            )
    if fmt == "jsonl":
        ids: list[str] = []
        for where, record in _json_records(path):
            if not isinstance(record, dict) or column not in record:
                keys = sorted(record) if isinstance(record, dict) else []
                raise ValueError(f"{where}: no client-column key {column!r}; keys present: {keys}")
            ids.append(_client_id(record[column], where))
        return tuple(ids)
    if fmt == "npz":
        with np.load(path, allow_pickle=False) as data:
            if column not in data.files:
                raise ValueError(
                    f"{path} has no client-column array {column!r}; arrays: {list(data.files)}"
                )
            values = data[column]
        if values.ndim != 1:
            raise ValueError(f"{path}: client-column {column!r} must be 1-D, one id per row")
        return tuple(_client_id(v, f"{path}, row {i}") for i, v in enumerate(values.tolist()))
    raise ValueError(f"{path}: a {fmt} task has no client-column; use one of csv, jsonl, npz")


def _client_id(value: Any, where: str) -> str:
    if isinstance(value, float) and not np.isfinite(value):
        raise ValueError(f"{where}: client id {value} is not a finite number")
    if isinstance(value, str | int | float) and not isinstance(value, bool) and str(value).strip():
        return str(value).strip()
    raise ValueError(f"{where}: empty or non-scalar client id {value!r}")


def _name(table: Mapping[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise DatasetOptionError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value


def _kind_option(value: Any, task: str) -> str:
    where = f"dataset-options tasks.{task}.kind"
    if not isinstance(value, str):
        raise DatasetOptionError(f"{where} must be a string, got {value!r}")
    try:
        TASK_KINDS.get(value)
    except RegistryError as error:
        raise DatasetOptionError(f"{where}: {error}") from None
    return value


def _labels_option(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value)
    ):
        raise DatasetOptionError(
            f"{where}: labels must be a non-empty list of values, got {value!r}"
        )
    labels = tuple(str(v) for v in value)
    if len(set(labels)) != len(labels):
        raise DatasetOptionError(f"{where}: labels lists a value more than once: {list(labels)}")
    return labels


def _texts(texts: list[str]) -> npt.NDArray[np.object_]:
    x = np.empty(len(texts), dtype=object)
    x[:] = texts
    return x


def _label_text(value: Any, where: str) -> str:
    if isinstance(value, str | int | float) and str(value).strip():
        return str(value).strip()
    raise ValueError(f"{where}: empty or non-scalar label {value!r}")


def _read_csv(
    path: Path, text_column: str, label_column: str
) -> tuple[npt.NDArray[Any], list[str]]:
    texts: list[str] = []
    labels: list[str] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames
        if not columns:
            raise ValueError(f"{path} is empty (expected a header row with columns)")
        for column in (text_column, label_column):
            if column not in columns:
                raise ValueError(f"{path} has no column {column!r}; columns: {list(columns)}")
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            text = row[text_column]
            if text is None:
                raise ValueError(f"{where}: the row has no {text_column!r} value")
            texts.append(text)
            labels.append(_label_text(row[label_column], where))
    if not texts:
        raise ValueError(f"{path} has a header but no rows")
    return _texts(texts), labels


def _json_records(path: Path) -> list[tuple[str, Any]]:
    """Each record of a jsonl file (blank lines skipped) or json array, with where it is."""
    content = path.read_text(encoding="utf-8-sig")
    records: list[tuple[str, Any]] = []
    if content.lstrip().startswith("["):  # a .json file holding one array of objects
        try:
            items = json.loads(content)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        records = [(f"{path}, item {i}", item) for i, item in enumerate(items)]
    else:
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((f"{path}, line {number}", json.loads(line)))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
    if not records:
        raise ValueError(f"{path} is empty (expected one JSON object per line)")
    return records


def _read_jsonl(
    path: Path, text_column: str, label_column: str
) -> tuple[npt.NDArray[Any], list[str]]:
    records = _json_records(path)
    texts: list[str] = []
    labels: list[str] = []
    for where, record in records:
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
        for key in (text_column, label_column):
            if key not in record:
                raise ValueError(f"{where}: no key {key!r}; keys present: {sorted(record)}")
        if not isinstance(record[text_column], str):
            raise ValueError(f"{where}: {text_column!r} must be a string")
        texts.append(record[text_column])
        labels.append(_label_text(record[label_column], where))
    return _texts(texts), labels


def _read_npz(path: Path, x_key: str, y_key: str) -> tuple[npt.NDArray[Any], list[str]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            present = list(data.files)
            arrays = {key: data[key] for key in (x_key, y_key) if key in present}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        # Also object arrays, which would need pickle (unsafe for shared files).
        raise ValueError(f"{path}: not a readable .npz of numeric arrays ({error})") from None
    missing = [key for key in (x_key, y_key) if key not in arrays]
    if missing:
        raise ValueError(f"{path} has no array {missing[0]!r}; arrays: {present}")
    x, y = arrays[x_key], arrays[y_key]
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{path}: {y_key!r} must be 1-D with one label per row of {x_key!r}")
    if len(y) == 0:
        raise ValueError(f"{path} is empty (no examples)")
    try:
        inputs = x.astype(np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {x_key!r} has non-numeric dtype {x.dtype}") from None
    return inputs, [_label_text(v, f"{path}, row {i}") for i, v in enumerate(y.tolist())]


def _read_image_folder(
    path: Path, image_size: int | None, grayscale: bool
) -> tuple[npt.NDArray[Any], list[str]]:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{path} has no class sub-directories (one per class, named by label)")
    arrays: list[npt.NDArray[np.float32]] = []
    labels: list[str] = []
    first: tuple[Path, tuple[int, int]] | None = None
    for directory in classes:
        for file in sorted(directory.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES or file.name.startswith("."):
                continue
            try:
                with Image.open(file) as opened:
                    image = opened.convert("L" if grayscale else "RGB")
            except (OSError, UnidentifiedImageError) as error:
                raise ValueError(f"{file}: not a readable image ({error})") from None
            if image_size is not None:
                image = image.resize((image_size, image_size))
            elif first is None:
                first = (file, image.size)
            elif image.size != first[1]:
                raise ValueError(
                    f"{file} is {_wh(image.size)} but {first[0]} is {_wh(first[1])}; "
                    "set image-size to resize all images to one size"
                )
            array = np.asarray(image, dtype=np.float32) / 255.0
            arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
            labels.append(directory.name)
    if not arrays:
        raise ValueError(f"{path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return np.stack(arrays).astype(np.float32), labels


def _wh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


DATASETS.add(
    NAME,
    DatasetEntry(
        build=build_files_dataset,
        options=("tasks", "grayscale"),
        description=(
            "your own files, one per task: csv/jsonl text, npz arrays or image folders "
            "(dataset-options = {tasks = {name = {path = ...}}})"
        ),
    ),
)
