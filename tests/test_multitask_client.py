"""Clients holding two tasks, end to end in process: what they send, and how the server averages.

The federation runs through the real ServerApp and ClientApp code
(``tests/inprocess_grid.py``). Each client holds two of three tasks (one a
regression); heads are task-shared, so each task's head must come back as
the mean over exactly the clients holding that task, weighted by that task's
own example counts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message, MessageType
from flwr.supercore.task_identity import TaskIdentity

from fedmtl.assembly import resolve_run
from fedmtl.client_app import WEIGHTING_STATE
from fedmtl.config import ExperimentConfig
from fedmtl.records import (
    ARRAYS,
    CLIENT,
    TASK_ARRAYS,
    ClientInfo,
    NDArrays,
    from_record,
    metric_values,
    task_examples,
    unpack_task_metrics,
)
from fedmtl.results import RunDirectory
from fedmtl.run_model import run_scopes
from fedmtl.scopes import keys_in
from fedmtl.server_app import run_server
from strategies import available_strategies
from tests.e2e_helpers import small
from tests.factories import SERVER_NODE
from tests.inprocess_grid import InProcessGrid, device_context

CLIENTS = 6
TASKS = ["digit", "parity", "digit-value"]


def _cfg(tmp_path: Path, **extra: object) -> ExperimentConfig:
    return resolve_run(
        small(
            tmp_path,
            **{
                "tasks": TASKS,
                "num-clients": CLIENTS,
                "tasks-per-client": 2,
                "num-rounds": 2,
                "scope-task": ["heads.*"],
                "scope-local": ["*.num_batches_tracked"],
                "scope-shared": ["backbone.*"],
                "task-weighting": "uncertainty",
                **extra,
            },
        )
    )


Recorded = dict[tuple[str, int, int], Message]


def _run(cfg: ExperimentConfig) -> tuple[Recorded, Recorded]:
    """Run in process; every (phase, round, client) train message received and reply sent."""
    contexts = {100 + c: device_context(100 + c, {"partition-id": c}) for c in range(CLIENTS)}
    received: Recorded = {}
    replies: Recorded = {}

    def spy(msg: Message, context: Context, call_next: Callable[..., Message]) -> Message:
        reply = call_next(msg, context)
        client = int(context.node_config["partition-id"])
        key = (msg.metadata.message_type, int(msg.content["config"]["server-round"]), client)
        received[key], replies[key] = msg, reply
        return reply

    run_server(InProcessGrid(contexts, cfg, mods=[spy]), cfg, RunDirectory.create(cfg))
    return received, replies


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[ExperimentConfig, Recorded, Recorded]:
    cfg = _cfg(tmp_path_factory.mktemp("multitask"))
    with pytest.MonkeyPatch.context() as patch:  # as the server_identity fixture, module-wide
        patch.setattr(TaskIdentity, "_run_id", 1)
        patch.setattr(TaskIdentity, "_node_id", SERVER_NODE)
        patch.setattr(TaskIdentity, "_task_id", 1)
        received, replies = _run(cfg)
    return cfg, received, replies


def test_two_task_clients_send_both_task_scopes_and_nothing_local(
    federation: tuple[ExperimentConfig, Recorded, Recorded],
) -> None:
    cfg, received, replies = federation
    scopes = run_scopes(cfg)
    shared, local = set(keys_in(scopes, "shared")), set(keys_in(scopes, "local"))
    for client in range(CLIENTS):
        reply = replies[(MessageType.TRAIN, 1, client)]
        info = ClientInfo.from_content(reply.content)
        held = [TASKS[client % 3], TASKS[(client + 1) % 3]]
        assert sorted(info.tasks) == sorted(held)
        heads = {k for k in keys_in(scopes, "task") if k.split(".")[1] in held}
        assert set(reply.content[TASK_ARRAYS].keys()) == heads  # both tasks' heads, no other
        assert set(reply.content[ARRAYS].keys()) == shared
        sent = set(reply.content[ARRAYS].keys()) | set(reply.content[TASK_ARRAYS].keys())
        assert not sent & local
        # the message it got carried the task arrays of exactly its two tasks
        message = received[(MessageType.TRAIN, 1, client)]
        assert set(message.content[TASK_ARRAYS].keys()) == heads
        # and one row of metrics per task (the regression's own MAE on evaluation)
        evaluated = replies[(MessageType.EVALUATE, 1, client)]
        per_task = unpack_task_metrics(metric_values(evaluated.content), info.tasks)
        assert set(per_task) == set(held)
        if "digit-value" in held:
            assert "mae" in per_task["digit-value"]
            assert "accuracy" not in per_task["digit-value"]
        assert WEIGHTING_STATE not in reply.content


def test_each_task_head_is_averaged_over_exactly_its_holders(
    federation: tuple[ExperimentConfig, Recorded, Recorded],
) -> None:
    """Round 2's task arrays = the task-examples-weighted mean of round 1's holders' replies."""
    _, received, replies = federation
    for task in TASKS:
        holders = [
            c
            for c in range(CLIENTS)
            if task in ClientInfo.from_content(replies[(MessageType.TRAIN, 1, c)].content).tasks
        ]
        assert len(holders) == 4  # 6 clients, each task held by 2 of every 3
        updates: list[NDArrays] = []
        weights = []
        for c in holders:
            content = replies[(MessageType.TRAIN, 1, c)].content
            arrays = from_record(content[TASK_ARRAYS])
            updates.append({k: v for k, v in arrays.items() if k.startswith(f"heads.{task}.")})
            weights.append(task_examples(content, task))
        expected = {
            k: sum(w * u[k].astype(np.float64) for u, w in zip(updates, weights, strict=True))
            / sum(weights)
            for k in updates[0]
        }
        for c in holders:
            got = from_record(received[(MessageType.TRAIN, 2, c)].content[TASK_ARRAYS])
            for key, value in expected.items():
                np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6)
    # a client's reply identity lists its tasks
    content = replies[(MessageType.TRAIN, 1, 0)].content
    assert list(content.config_records[CLIENT]["tasks"]) == ["digit", "parity"]


@pytest.mark.parametrize("strategy", available_strategies())
def test_every_strategy_runs_clients_holding_two_tasks(
    strategy: str, tmp_path: Path, server_identity: None
) -> None:
    """One round in process: no failure or rejection, one evaluate row per client per task.

    Batch-norm running statistics stay local: a server optimizer's first step
    (fedadagrad, eta 0.1) can push a shared running variance below 0, which turns
    every client's outputs to NaN whatever tasks it holds (those replies are
    rejected as non-finite).
    """
    cfg = resolve_run(
        small(
            tmp_path,
            **{
                "strategy": strategy,
                "tasks": TASKS,
                "num-clients": 3,
                "tasks-per-client": 2,
                "num-rounds": 1,
                "scope-local": ["heads.*", "*.num_batches_tracked", "*.running_*"],
            },
        )
    )
    contexts = {100 + c: device_context(100 + c, {"partition-id": c}) for c in range(3)}
    run = RunDirectory.create(cfg)
    run_server(InProcessGrid(contexts, cfg), cfg, run)
    last = run.rounds()[-1]
    assert not last.failures and not last.rejected and not last.skipped, strategy
    rows = sorted((r.client_id, r.task) for r in last.evaluate.clients)
    held = {(c, TASKS[(c + j) % 3]) for c in range(3) for j in range(2)}
    assert rows == sorted(held)
