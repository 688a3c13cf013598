"""FedBABU: heads frozen during federation, a throw-away head fine-tuned before evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord

from fedmtl.assembly import resolve_run
from fedmtl.client_app import LOCAL_STATE, handle_evaluate, handle_train
from fedmtl.config import build_config
from fedmtl.records import CONFIG, HEAD_FINETUNE_EPOCHS, TASK_ARRAYS, to_record
from fedmtl.run_model import initial_model, run_scopes
from strategies import ScopedStrategy, build_strategy
from strategies.registry import Sampling, StrategyOptionError
from tests.client_helpers import evaluate_message, global_arrays, node_context, train_message
from tests.factories import FakeGrid

CFG = resolve_run(build_config({"strategy": "fedbabu", "num-clients": 3}))  # preset applied


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)


def _accuracy(epochs: int) -> float:
    shared, _ = global_arrays(CFG, "digit")
    message = evaluate_message(shared, {}, head_finetune_epochs=epochs)
    reply = handle_evaluate(message, node_context(0), CFG)
    return float(reply.content.metric_records["metrics"]["accuracy"])  # type: ignore[arg-type]


def test_preset_freezes_heads_and_shares_the_body() -> None:
    scopes = run_scopes(CFG)
    assert {scopes[k] for k in scopes if k.startswith("heads.")} == {"frozen"}
    assert scopes["backbone.conv1.weight"] == scopes["backbone.proj.bias"] == "shared"
    assert scopes["backbone.bn1.num_batches_tracked"] == "local"


def test_server_asks_for_head_finetuning_at_evaluation_only(server_identity: None) -> None:
    # Prepare
    inner = build_strategy("fedbabu", {"finetune_epochs": 3}, Sampling(min_available_nodes=1))
    strategy = ScopedStrategy(inner)
    arrays = to_record({"backbone.w": np.zeros(2, dtype=np.float32)})
    grid = FakeGrid({1: "a"})
    # Execute
    train = list(strategy.configure_train(1, arrays, ConfigRecord({}), grid))  # type: ignore[arg-type]
    evals = list(strategy.configure_evaluate(1, arrays, ConfigRecord({}), grid))  # type: ignore[arg-type]
    # Assert
    assert HEAD_FINETUNE_EPOCHS not in train[0].content.config_records[CONFIG]
    assert evals[0].content.config_records[CONFIG][HEAD_FINETUNE_EPOCHS] == 3
    with pytest.raises(StrategyOptionError, match="finetune_epochs"):
        build_strategy("fedbabu", {"finetune_epochs": -1})


def test_training_moves_the_body_and_never_the_head(server_identity: None) -> None:
    # Prepare
    shared, _ = global_arrays(CFG, "digit")
    head_before = {k: v.clone() for k, v in initial_model(CFG).heads.state_dict().items()}
    context = node_context(0)
    # Execute
    reply = handle_train(train_message(shared, {}), context, CFG)
    # Assert: only the body travels, no head is kept locally, the head is untouched
    sent = reply.content.array_records["arrays"]
    assert set(sent) == set(shared) and TASK_ARRAYS not in reply.content
    assert not np.array_equal(
        sent["backbone.conv1.weight"].numpy(), shared["backbone.conv1.weight"]
    )
    assert not any(k.startswith("heads.") for k in context.state.array_records[LOCAL_STATE])
    for key, value in initial_model(CFG).heads.state_dict().items():
        assert torch.equal(value, head_before[key]), key


def test_finetuning_a_copy_of_the_head_lifts_accuracy_and_leaves_the_head_as_it_was(
    server_identity: None,
) -> None:
    # Prepare
    head_before = {k: v.clone() for k, v in initial_model(CFG).heads.state_dict().items()}
    # Execute
    frozen_head = _accuracy(0)
    tuned, tuned_again = _accuracy(5), _accuracy(5)
    # Assert: a random head is near chance on 10 digits; five epochs fit it to the body
    assert frozen_head < 0.3 < tuned
    assert tuned == tuned_again  # the fine-tuned copy was thrown away, and seeded
    for key, value in initial_model(CFG).heads.state_dict().items():
        assert torch.equal(value, head_before[key]), key
