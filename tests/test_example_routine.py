"""A plug-in strategy with client behaviour (tests/example_routine.py), run end to end in process.

The federation runs through the real ServerApp and ClientApp code
(``tests/inprocess_grid.py``); each client's reply must be exactly what the two
phases give when run by hand with :mod:`fedmtl.training`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from flwr.app import Context, Message, MessageType

from fedmtl.assembly import resolve_run
from fedmtl.config import ExperimentConfig, partition_spec
from fedmtl.data import client_data
from fedmtl.models.state import export_arrays
from fedmtl.records import NDArrays
from fedmtl.results import RunDirectory
from fedmtl.run_model import fresh_model, run_scopes
from fedmtl.scopes import keys_in
from fedmtl.server_app import run_server
from fedmtl.training import train_local
from tests.client_helpers import reply_arrays, round_settings, trainable_keys
from tests.e2e_helpers import small
from tests.inprocess_grid import InProcessGrid, device_context

CLIENTS = 3


def _federation(tmp_path: Path, strategy: str, **options: int) -> dict[int, NDArrays]:
    """Run one round of ``strategy`` in process; return each client's train reply arrays."""
    cfg = resolve_run(
        small(tmp_path, **{"strategy": strategy, "strategy-options": options, "num-rounds": 1})
    )
    contexts = {100 + c: device_context(100 + c, {"partition-id": c}) for c in range(CLIENTS)}
    replies: dict[int, NDArrays] = {}

    def spy(msg: Message, context: Context, call_next: Callable[..., Message]) -> Message:
        reply = call_next(msg, context)
        if msg.metadata.message_type == MessageType.TRAIN:
            replies[int(context.node_config["partition-id"])] = reply_arrays(reply)
        return reply

    run_server(InProcessGrid(contexts, cfg, mods=[spy]), cfg, RunDirectory.create(cfg))
    return replies


def _by_hand(cfg: ExperimentConfig, client: int, warmup: int) -> NDArrays:
    """Round 1 of a client by hand: the head alone for ``warmup`` epochs, then everything."""
    data = client_data(partition_spec(cfg), client)
    model = fresh_model(cfg)
    trainable = trainable_keys(cfg, model, data.task)
    head = {name for name in trainable if name.startswith(f"heads.{data.task}.")}
    settings = round_settings(cfg, client)
    warm = dataclasses.replace(settings, epochs=warmup)
    train_local(model, data.task, data.x_train, data.y_train, warm, head)
    train_local(model, data.task, data.x_train, data.y_train, settings, trainable)
    return export_arrays(model, keys_in(run_scopes(cfg), "shared"))


def test_head_warmup_clients_run_both_phases_of_the_plugin_routine(
    tmp_path: Path, server_identity: None
) -> None:
    # Prepare
    torch.set_num_threads(1)
    strategy = "tests.example_routine:HeadWarmup"
    cfg = resolve_run(small(tmp_path, strategy=strategy))
    # Execute
    warmed = _federation(tmp_path / "warmup", strategy, warmup_epochs=2)
    plain = _federation(tmp_path / "fedavg", "fedavg")
    # Assert: every client's reply is the hand-run of the two phases, and not FedAvg's
    assert sorted(warmed) == sorted(plain) == list(range(CLIENTS))
    for client, sent in warmed.items():
        expected = _by_hand(cfg, client, warmup=2)
        assert sorted(sent) == sorted(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(sent[key], value, err_msg=f"client {client}: {key}")
        conv = "backbone.conv1.weight"
        assert not np.array_equal(sent[conv], plain[client][conv])
