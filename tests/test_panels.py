"""Held-out clients and the evaluation panel: seeded, disjoint, honoured by the strategy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord

from fedmtl.client_app import handle_evaluate
from fedmtl.config import ConfigError, build_config
from fedmtl.panels import evaluation_panel, holdout_clients
from fedmtl.records import to_record
from strategies import ScopedStrategy, build_strategy
from strategies.registry import Sampling
from strategies.scoped import ScopedOptions
from tests.client_helpers import evaluate_message, global_arrays, node_context
from tests.factories import FakeGrid, evaluate_reply

ARRAYS = to_record({"backbone.w": np.zeros(2, dtype=np.float32)})


def test_holdout_and_panel_are_seeded_and_disjoint() -> None:
    cfg = build_config({"num-clients": 12, "holdout-clients": 3, "evaluate-panel": 5})
    held_out, panel = holdout_clients(cfg), evaluation_panel(cfg)
    assert len(held_out) == 3 and panel is not None and len(panel) == 5
    assert not held_out & panel
    assert holdout_clients(cfg) == held_out and evaluation_panel(cfg) == panel
    other = build_config({"num-clients": 12, "holdout-clients": 3, "seed": 1})
    assert holdout_clients(other) != held_out
    assert evaluation_panel(build_config({})) is None


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"holdout-clients": 12}, "holdout-clients"),
        ({"holdout-clients": 4, "evaluate-panel": 9}, "evaluate-panel"),
        ({"evaluate-panel": 3, "fraction-evaluate": 0.5}, "evaluate-panel"),
    ],
)
def test_impossible_sets_name_the_key(values: dict[str, int], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_config(values)


def test_held_out_clients_are_never_sampled_and_the_panel_alone_is_evaluated(
    server_identity: None,
) -> None:
    # Prepare: clients 100..105 (FakeGrid: node + 100)
    grid = FakeGrid({n: "a" for n in range(6)})
    inner = build_strategy("fedavg", {}, Sampling(min_available_nodes=4))
    strategy = ScopedStrategy(
        inner,
        options=ScopedOptions(
            excluded_clients=frozenset({101, 104}), evaluate_panel=frozenset({100, 103})
        ),
    )
    # Execute
    train = strategy.configure_train(1, ARRAYS, ConfigRecord(), grid)  # type: ignore[arg-type]
    evals = strategy.configure_evaluate(1, ARRAYS, ConfigRecord(), grid)  # type: ignore[arg-type]
    # Assert
    assert sorted(m.metadata.dst_node_id for m in train) == [0, 2, 3, 5]
    assert sorted(m.metadata.dst_node_id for m in evals) == [0, 3]


def test_evaluate_nodes_logs_apart_from_the_rounds(server_identity: None) -> None:
    class AnsweringGrid(FakeGrid):
        def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
            messages = list(messages)
            if messages and messages[0].metadata.message_type != "evaluate":
                return super().send_and_receive(messages, timeout=timeout)
            return [evaluate_reply(m.metadata.dst_node_id, "a", 10, 0.3, 0.9) for m in messages]

    grid = AnsweringGrid({n: "a" for n in range(4)})
    strategy = ScopedStrategy(build_strategy("fedavg", {}, Sampling(min_available_nodes=2)))
    log = strategy.evaluate_nodes({101, 103}, ARRAYS, ConfigRecord(), grid, 5.0)  # type: ignore[arg-type]
    assert sorted(row.client_id for row in log.evaluate) == [1, 3]  # evaluate_reply ids
    assert not strategy.rounds[0].evaluate


def test_global_view_uses_a_fresh_tuned_head_not_the_local_one(server_identity: None) -> None:
    torch.set_num_threads(1)
    cfg = build_config({"num-clients": 3})
    shared, _ = global_arrays(cfg, "digit")
    reply = handle_evaluate(
        evaluate_message(shared, {}, global_view_epochs=5), node_context(0), cfg
    )
    metrics = reply.content.metric_records["metrics"]
    # The local head is still the random initial one; a tuned fresh head beats it
    assert float(metrics["global-accuracy"]) > float(metrics["accuracy"]) + 0.2  # type: ignore[arg-type]
    assert "global-num-examples" not in metrics


def test_the_server_does_not_wait_for_held_out_clients_to_be_sampled() -> None:
    assert build_config({"num-clients": 12, "holdout-clients": 2}).expected_clients == 10
    capped = build_config({"num-clients": 12, "holdout-clients": 2, "min-available-clients": 12})
    assert capped.expected_clients == 10
    assert build_config({"min-available-clients": 5}).expected_clients == 5
