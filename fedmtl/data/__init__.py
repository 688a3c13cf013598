"""Datasets, tasks and their federated partitions (plain numpy, no Flower types)."""

from fedmtl.data import digits as _digits  # noqa: F401  (registers the built-in dataset)
from fedmtl.data import files as _files  # noqa: F401  (registers the users' own files)
from fedmtl.data import text as _text  # noqa: F401  (registers wordnet-fortunes)
from fedmtl.data.federation import ClientData, build_federation, client_data, client_tasks
from fedmtl.data.registry import DatasetSpec, TaskSpec, get_dataset_spec

__all__ = [
    "ClientData",
    "DatasetSpec",
    "TaskSpec",
    "build_federation",
    "client_data",
    "client_tasks",
    "get_dataset_spec",
]
