"""Helpers of the end-to-end tests: a small experiment and a client mod that records replies."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message

from fedmtl.client_app import LOCAL_STATE
from fedmtl.config import ExperimentConfig, load_experiment
from fedmtl.records import ARRAYS, TASK_ARRAYS


def _digest(record: Any, key: str) -> str:
    return hashlib.sha256(record[key].numpy().tobytes()).hexdigest()


def make_spy(log_dir: Path) -> Callable[..., Message]:
    """A Flower client mod that records, per client, what each train reply carries."""

    def spy(
        msg: Message, context: Context, call_next: Callable[[Message, Context], Message]
    ) -> Message:
        before = context.state.get(LOCAL_STATE)
        reply = call_next(msg, context)
        after = context.state.get(LOCAL_STATE)
        if msg.metadata.message_type != "train" or reply.has_error():
            return reply
        client = reply.content.config_records["client"]
        task = str(client["task"])
        head = f"heads.{task}.weight"
        entry = {
            "round": int(msg.content["config"]["server-round"]),
            "task": task,
            "records": sorted(reply.content.keys()),
            "arrays": sorted(reply.content[ARRAYS].keys()),
            "task-arrays": sorted(reply.content[TASK_ARRAYS].keys())
            if TASK_ARRAYS in reply.content
            else [],
            "head-before": _digest(before, head) if before is not None and head in before else None,
            "head-after": _digest(after, head) if after is not None and head in after else None,
        }
        with (log_dir / f"client-{client['client-id']}.jsonl").open("a") as fh:
            fh.write(json.dumps(entry) + "\n")
        return reply

    return spy


def small(tmp_path: Path, **overrides: Any) -> ExperimentConfig:
    values = {
        "num-clients": 3,
        "num-rounds": 2,
        "partitioner": "iid",
        "output-dir": str(tmp_path / "runs"),
        "round-timeout-s": 120.0,
    }
    values.update(overrides)
    return load_experiment("digits", values)


def read_spy(spy_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """What :func:`make_spy` recorded, per client file."""
    return {
        p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in spy_dir.iterdir()
    }


FAULTS = {0: "NaN", 1: "wrong shape", 2: "wrong key", 3: "crash"}


def _corruptible(reply: Message) -> str:
    """The record of float arrays a train reply carries: shared, else task arrays."""
    for name in (ARRAYS, TASK_ARRAYS):
        record = reply.content.array_records.get(name)
        if record is not None and any(a.dtype == "float32" for a in record.values()):
            return name
    return ARRAYS  # a strategy that shares nothing (local-only): smuggle arrays in


def saboteur(
    msg: Message, context: Context, call_next: Callable[[Message, Context], Message]
) -> Message:
    """A client mod: clients 0-3 misbehave in training, the others are honest.

    Client 0 sends a NaN, 1 a wrongly shaped array, 2 a wrongly named one, in
    the shared arrays (the task arrays when nothing else is shared; an extra
    array when nothing at all is); client 3 raises.
    """
    client = int(context.node_config["partition-id"])
    if msg.metadata.message_type != "train" or client not in FAULTS:
        return call_next(msg, context)
    if FAULTS[client] == "crash":
        raise RuntimeError("client 3 crashed")
    reply = call_next(msg, context)
    name = _corruptible(reply)
    record = reply.content.array_records.get(name, ArrayRecord())
    arrays = {k: v.numpy().copy() for k, v in record.items()}
    floats = sorted(k for k in arrays if arrays[k].dtype == np.float32)
    if not floats:
        arrays["backbone.smuggled"] = np.full(3, np.nan, np.float32)
    elif FAULTS[client] == "NaN":
        arrays[floats[0]].flat[0] = np.nan
    elif FAULTS[client] == "wrong shape":
        arrays[floats[0]] = np.zeros(3, np.float32)
    else:
        arrays["backbone.smuggled"] = arrays.pop(floats[0])
    reply.content[name] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    return reply
