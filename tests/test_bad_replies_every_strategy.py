"""Every registered strategy, whole runs: malformed replies never averaged in, logged.

The federation runs in this process (``tests/inprocess_grid.py``) through the
real ServerApp and ClientApp code, so all strategies fit in about a minute.
Clients 0-2 send a NaN, a wrongly shaped and a wrongly named array, client 3
crashes (the saboteur of ``tests/e2e_helpers.py``); clients 4-7 are honest.
A strategy that returns NaN is caught too, before anything is broadcast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedmtl.records import from_record
from fedmtl.results import METRICS_FILE, RunDirectory, read_metrics
from fedmtl.server_app import initial_arrays, run_server
from strategies import available_strategies
from tests.e2e_helpers import saboteur, small
from tests.inprocess_grid import InProcessGrid, device_context

pytestmark = pytest.mark.slow
CLIENTS = 8
# Flower's FedAdagrad defaults (eta 0.1, tau 1e-9) wreck the backbone in one round,
# after which every reply carries NaN metrics (README: "The defaults matter").
OPTIONS = {"fedadagrad": {"eta": 0.01}}
# What the server says of clients 0-2; a strategy sharing nothing only sees smuggled arrays.
REASONS = {0: "non-finite values", 1: "expected float32", 2: "keys differ"}
NOTHING_SHARED = {0: "keys differ", 1: "keys differ", 2: "keys differ"}


@pytest.mark.parametrize("strategy", available_strategies())
def test_bad_replies_are_rejected_and_the_run_finishes(
    tmp_path: Path, strategy: str, server_identity: None
) -> None:
    # Prepare
    torch.set_num_threads(1)
    cfg = small(
        tmp_path,
        **{
            "num-clients": CLIENTS,
            "strategy": strategy,
            "strategy-options": OPTIONS.get(strategy, {}),
        },
    )
    contexts = {100 + c: device_context(100 + c, {"partition-id": c}) for c in range(CLIENTS)}
    run = RunDirectory.create(cfg)

    # Execute
    run_server(InProcessGrid(contexts, cfg, mods=[saboteur]), cfg, run)

    # Assert: each round, the three malformed replies are rejected with their
    # reasons, the crash is a failure, the honest four are the ones aggregated
    records = read_metrics(run.path / METRICS_FILE)
    assert [r["round"] for r in records] == [0, 1, 2]
    for record in records[1:]:
        reasons = {row["client-id"]: row["reason"] for row in record["rejected"]}
        expected = NOTHING_SHARED if strategy == "local-only" else REASONS
        assert sorted(reasons) == [0, 1, 2]
        for client, words in expected.items():
            assert words in reasons[client], (client, reasons[client])
        assert [row["client-id"] for row in record["failures"]] == [3]
        assert [row["client-id"] for row in record["train"]["clients"]] == [4, 5, 6, 7]
        assert not record["skipped"]
    with np.load(run.path / "final" / "shared.npz") as shared:
        assert all(np.isfinite(shared[k]).all() for k in shared.files)
    evaluated = records[-1]["evaluate"]["clients"]
    assert len(evaluated) == CLIENTS
    assert all(np.isfinite(c["loss"]) and 0.0 <= c["accuracy"] <= 1.0 for c in evaluated)


def test_a_strategy_returning_nan_is_caught_before_broadcast(
    tmp_path: Path, server_identity: None
) -> None:
    # Prepare: honest clients, a strategy gone wrong
    torch.set_num_threads(1)
    cfg = small(tmp_path, **{"num-clients": 4, "strategy": "tests.failing_strategies:NanFedAvg"})
    contexts = {100 + c: device_context(100 + c, {"partition-id": c}) for c in range(4)}
    run = RunDirectory.create(cfg)
    initial, _ = initial_arrays(cfg)

    # Execute
    run_server(InProcessGrid(contexts, cfg), cfg, run)

    # Assert: each round is skipped with the reason, and the global model never changed
    records = read_metrics(run.path / METRICS_FILE)
    assert [r["round"] for r in records] == [0, 1, 2]
    for record in records[1:]:
        assert record["skipped"]
        assert record["skip-reason"].startswith("NanFedAvg returned non-finite values in 'arrays'")
        assert not record["rejected"] and len(record["train"]["clients"]) == 4
        assert np.isfinite(record["strategy"]["loss"])  # what FedAvg reported, kept
    with np.load(run.path / "final" / "shared.npz") as shared:
        for key, value in from_record(initial).items():
            np.testing.assert_array_equal(shared[key], value)
