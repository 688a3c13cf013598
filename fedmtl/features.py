"""Frozen-backbone feature cache: compute a client's features once, reuse them every round.

When no backbone parameter is trained (linear probing), a client's backbone
features never change, so recomputing them every round is pure waste: on a
transformer it is nearly all of a round's time. :func:`extract_features` is the
one function that computes features (eval mode, fixed order and batch size);
with the cache on, its result is kept in this process's memory and in a
directory of ``.npy`` files, keyed by a fingerprint of the backbone's weights
and of the inputs. With the cache off it is called every round. Either way
training sees the same tensor, so results are identical.

Flower hands a simulated client to whichever Ray worker is free, so one
process's memory alone would encode a client again on every worker that runs
it. Hence the directory level, which every process on a node sees:

- ``disk``: a directory kept across runs (``feature-cache-dir``).
- ``memory``: a temporary directory of the run (:func:`run_feature_store`),
  named in :data:`RUN_STORE_ENV`, which the Ray workers of a local Ray inherit
  from the driver; it is removed when the run ends. Where the variable is not
  set (a deployed device, a Ray started elsewhere) only the process's memory is
  used, as before.

A miss takes a per-entry file lock (POSIX ``flock``), checks again, computes and
writes with an atomic rename, so two workers asking for one entry at once
compute it once; a damaged file is recomputed and rewritten.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from fedmtl.models import Backbone

#: Bump when the feature computation changes, so old disk entries are not reused.
FORMAT_VERSION = 1
#: Batch size of feature extraction; part of the cache key.
EXTRACT_BATCH = 64
#: Memory budget of the in-process cache (least recently used entries go first).
MEMORY_BUDGET_BYTES = 2 * 1024**3
#: Environment variable naming the run's feature directory of ``memory`` mode.
RUN_STORE_ENV = "FEDMTL_RUN_FEATURE_STORE"
#: Environment variable naming a file to which every :func:`extract_features`
#: call appends ``<pid> <inputs fingerprint> <rows>`` (diagnostics: counting encodes).
ENCODE_LOG_ENV = "FEDMTL_ENCODE_LOG"


@torch.no_grad()
def extract_features(
    backbone: Backbone,
    inputs: npt.NDArray[Any],
    device: torch.device | None = None,
    batch_size: int = EXTRACT_BATCH,
) -> torch.Tensor:
    """Features of ``inputs`` in eval mode, in order, as a float32 CPU tensor."""
    device = device or torch.device("cpu")
    was_training = backbone.training
    backbone.to(device).eval()
    try:
        chunks = [
            backbone(backbone.prepare(inputs[start : start + batch_size], device)).float().cpu()
            for start in range(0, len(inputs), batch_size)
        ]
    finally:
        backbone.train(was_training)
    _log_encode(inputs)
    if not chunks:
        return torch.zeros((0, backbone.feature_dim), dtype=torch.float32)
    return torch.cat(chunks)


def _log_encode(inputs: npt.NDArray[Any]) -> None:
    log = os.environ.get(ENCODE_LOG_ENV)
    if log:
        # One short O_APPEND write per line: lines of concurrent processes do not interleave.
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()} {inputs_fingerprint(inputs)} {len(inputs)}\n")


def run_store_dir() -> str:
    """The run's feature directory of ``memory`` mode (:data:`RUN_STORE_ENV`), or ``""``."""
    return os.environ.get(RUN_STORE_ENV, "")


@contextmanager
def run_feature_store(enabled: bool = True) -> Iterator[Path | None]:
    """A temporary feature directory for one run, named in :data:`RUN_STORE_ENV`.

    Set it before Ray starts (the workers of a local Ray inherit the variable),
    so every worker of the run on this machine shares the run's features. The
    directory and the previous value of the variable go when the block ends.
    """
    if not enabled:
        yield None
        return
    previous = os.environ.get(RUN_STORE_ENV)
    directory = Path(tempfile.mkdtemp(prefix="fedmtl-features-"))
    os.environ[RUN_STORE_ENV] = str(directory)
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(RUN_STORE_ENV, None)
        else:
            os.environ[RUN_STORE_ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _entry_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created); without POSIX locks, no lock."""
    if sys.platform == "win32":
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            # Whoever waits on this (unlinked) file, or creates a new one, checks
            # the entry again after locking, so removing it early is safe.
            path.unlink(missing_ok=True)
            fcntl.flock(fh, fcntl.LOCK_UN)


def backbone_fingerprint(backbone: Backbone) -> str:
    """SHA-256 of the backbone's class, state_dict names, dtypes, shapes and values."""
    digest = hashlib.sha256(type(backbone).__qualname__.encode())
    for name, tensor in backbone.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()


def inputs_fingerprint(inputs: npt.NDArray[Any]) -> str:
    """SHA-256 of an input array: texts by content, numeric arrays by dtype, shape, bytes."""
    digest = hashlib.sha256(f"{inputs.dtype}:{inputs.shape}".encode())
    if inputs.dtype == object:
        for item in inputs:
            digest.update(str(item).encode())
            digest.update(b"\x00")
    else:
        digest.update(np.ascontiguousarray(inputs).tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Features per (backbone, inputs) key, in memory and optionally in a directory.

    Parameters
    ----------
    mode : str
        ``off`` (always compute), ``memory`` or ``disk`` (both: this process's
        memory, in front of ``directory`` when one is given).
    directory : path, optional
        Where file entries live, seen by every process that uses it (required
        for ``disk``; for ``memory`` the run's temporary directory, or none).
    budget_bytes : int
        Memory budget; least recently used entries are dropped beyond it.
    """

    def __init__(
        self,
        mode: str = "memory",
        directory: str | Path | None = None,
        budget_bytes: int = MEMORY_BUDGET_BYTES,
    ) -> None:
        if mode not in ("off", "memory", "disk"):
            raise ValueError(f"feature cache mode '{mode}' not in ['off', 'memory', 'disk']")
        if mode == "disk" and not directory:
            raise ValueError("feature cache mode 'disk' needs a directory")
        self.mode = mode
        self.directory = Path(directory) if directory else None
        self.budget_bytes = budget_bytes
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Return the features stored under ``key``, computing (and storing) them if absent."""
        if self.mode == "off":
            self.misses += 1
            return compute()
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        features = self._read_disk(key)
        if features is None and self.directory is not None:
            with _entry_lock(self._path(key).with_suffix(".lock")):
                features = self._read_disk(key)  # another process may have just written it
                if features is None:
                    features = self._compute(key, compute)
                else:
                    self.hits += 1
        elif features is None:
            features = self._compute(key, compute)
        else:
            self.hits += 1
        self._remember(key, features)
        return features

    def _compute(self, key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        self.misses += 1
        features = compute()
        self._write_disk(key, features)
        return features

    def _remember(self, key: str, features: torch.Tensor) -> None:
        self._memory[key] = features
        self._bytes += features.numel() * features.element_size()
        while self._bytes > self.budget_bytes and len(self._memory) > 1:
            _, dropped = self._memory.popitem(last=False)
            self._bytes -= dropped.numel() * dropped.element_size()

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.npy"

    def _read_disk(self, key: str) -> torch.Tensor | None:
        if self.directory is None:
            return None
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False))
        except (OSError, ValueError, EOFError):
            return None  # a damaged entry is recomputed and rewritten

    def _write_disk(self, key: str, features: torch.Tensor) -> None:
        if self.directory is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees a half-written file, even from
        # another Ray worker computing the same entry at the same time.
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, features.numpy(), allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def feature_key(backbone_id: str, inputs: npt.NDArray[Any]) -> str:
    """Cache key of ``inputs`` under a backbone fingerprint."""
    parts = f"v{FORMAT_VERSION}:{EXTRACT_BATCH}:{backbone_id}:{inputs_fingerprint(inputs)}"
    return hashlib.sha256(parts.encode()).hexdigest()
