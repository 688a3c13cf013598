"""Helpers of the end-to-end tests: a small experiment and a client mod that records replies."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import Context, Message

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
