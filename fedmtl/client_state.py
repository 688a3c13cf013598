"""Where a client keeps its own state between rounds: in its Context, or on disk.

A client's state is a few named groups of arrays (its local scope; Ditto's
personal model). Two stores hold them:

* ``memory``: Flower's ``context.state`` (the default; lost when the process
  that simulates the nodes dies, and every node's state stays in RAM);
* ``disk``: one directory per client under ``client-state-dir``, one ``.npz``
  file per round the client trained in (written atomically). RAM holds only
  the clients of the current round, so thousands of clients fit, and a killed
  run resumed from a checkpoint of round ``R`` reads exactly the state each
  client had after round ``R``: a client loads the newest version no later than
  the round it is asked about, and versions older than the one the last
  checkpoint needs are pruned.

No Flower message types here; the ClientApp passes its ``Context``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from flwr.app import Context

from fedmtl.atomic import atomic_file
from fedmtl.records import NDArrays, from_record, to_record

CLIENT_STATES = ("memory", "disk")
_VERSION = re.compile(r"round-(\d+)\.npz")
_SEPARATOR = "::"  # between a group name and an array key in one .npz


class ClientStateStore:
    """Load and save a client's named state groups.

    Parameters
    ----------
    mode : str
        ``memory`` (Flower's ``context.state``) or ``disk``.
    directory : str, optional
        Root directory of the ``disk`` store.
    """

    def __init__(self, mode: str, directory: str | None = None) -> None:
        if mode not in CLIENT_STATES:
            raise ValueError(f"client-state '{mode}' not in {list(CLIENT_STATES)}")
        if mode == "disk" and not directory:
            raise ValueError("client-state 'disk' needs a directory (client-state-dir)")
        self.mode = mode
        self.directory = Path(directory) if directory else None

    # ------------------------------------------------------------------ paths
    def client_dir(self, client_id: int) -> Path:
        """The directory holding ``client_id``'s versions (disk store)."""
        assert self.directory is not None
        return self.directory / f"client-{client_id}"

    def versions(self, client_id: int) -> list[int]:
        """Rounds ``client_id`` saved state after, ascending (disk store)."""
        folder = self.client_dir(client_id)
        if not folder.is_dir():
            return []
        found = (_VERSION.fullmatch(p.name) for p in folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    # --------------------------------------------------------------- load/save
    def load(self, context: Context, client_id: int, upto_round: int) -> dict[str, NDArrays]:
        """The client's state groups as of the end of ``upto_round`` (empty if none)."""
        if self.mode == "memory":
            return {
                name: from_record(record) for name, record in context.state.array_records.items()
            }
        usable = [r for r in self.versions(client_id) if r <= upto_round]
        if not usable:
            return {}
        path = self.client_dir(client_id) / f"round-{usable[-1]}.npz"
        groups: dict[str, NDArrays] = {}
        with np.load(path, allow_pickle=False) as data:
            for flat in data.files:
                group, key = flat.split(_SEPARATOR, 1)
                groups.setdefault(group, {})[key] = data[flat]
        return groups

    def save(
        self,
        context: Context,
        client_id: int,
        server_round: int,
        groups: dict[str, NDArrays],
        keep_from: int | None = None,
    ) -> None:
        """Store ``groups`` as the client's state after ``server_round``.

        ``keep_from`` is the round of the last durable checkpoint: the newest
        version not after it is kept (a resumed run needs it), older ones go.
        ``None`` (the run does not checkpoint) keeps only this version.
        """
        keep_from = server_round if keep_from is None else keep_from
        if self.mode == "memory":
            for name, arrays in groups.items():
                context.state[name] = to_record(arrays)
            return
        folder = self.client_dir(client_id)
        folder.mkdir(parents=True, exist_ok=True)
        flat = {
            f"{group}{_SEPARATOR}{key}": value
            for group, arrays in groups.items()
            for key, value in arrays.items()
        }
        with atomic_file(folder / f"round-{server_round}.npz") as fh:
            np.savez(fh, **flat)  # type: ignore[arg-type]
        self._prune(client_id, keep_from)

    def _prune(self, client_id: int, keep_from: int) -> None:
        versions = self.versions(client_id)
        needed = [r for r in versions if r <= keep_from]
        oldest_kept = needed[-1] if needed else 0
        for version in versions:
            if version < oldest_kept:
                (self.client_dir(client_id) / f"round-{version}.npz").unlink(missing_ok=True)
