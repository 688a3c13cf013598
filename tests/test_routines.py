"""Client routines: the registry, how a routine is named and found, FedRep's two phases."""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord

from fedmtl.assembly import resolve_run
from fedmtl.client_app import handle_evaluate, handle_train
from fedmtl.config import build_config, partition_spec
from fedmtl.data import client_data
from fedmtl.models.state import export_arrays
from fedmtl.records import HEAD_EPOCHS, PERSONAL_LAMBDA, Instruction, to_record
from fedmtl.registry import RegistryError
from fedmtl.routines import (
    ROUTINES,
    ClientRoutine,
    DittoRoutine,
    FedRepRoutine,
    resolve_routine,
    routine_for,
)
from fedmtl.run_model import fresh_model, run_scopes
from fedmtl.scopes import keys_in
from fedmtl.training import train_local
from strategies import available_strategies, build_strategy
from strategies.registry import Sampling
from tests.client_helpers import (
    evaluate_message,
    global_arrays,
    node_context,
    reply_arrays,
    round_settings,
    train_message,
    trainable_keys,
)
from tests.factories import FakeGrid


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)


def test_builtin_routines_are_registered() -> None:
    assert {"default", "ditto", "fedrep"} <= set(ROUTINES)  # and any a test module registered
    assert isinstance(resolve_routine("fedrep"), FedRepRoutine)
    assert type(resolve_routine("default")) is ClientRoutine


@pytest.mark.parametrize("strategy", available_strategies())
def test_every_strategy_names_a_routine_that_reads_what_it_sends(
    strategy: str, server_identity: None
) -> None:
    # Prepare
    inner = build_strategy(strategy, {}, Sampling(min_available_nodes=1))
    arrays = to_record({"backbone.w": np.zeros(2, dtype=np.float32)})
    grid = FakeGrid({n: "a" for n in range(10)})
    # Execute
    train = list(inner.configure_train(1, arrays, ConfigRecord(), grid))  # type: ignore[arg-type]
    evals = list(inner.configure_evaluate(1, arrays, ConfigRecord(), grid))  # type: ignore[arg-type]
    # Assert: each message decodes, and its routine acts on every known key it carries
    assert train
    for message in train + evals:
        instruction = Instruction.from_content(message.content)
        routine = routine_for(instruction)
        assert instruction.sent_keys() <= routine.reads
    expected = {"fedrep": "fedrep", "ditto": "ditto"}.get(strategy, "default")
    assert Instruction.from_content(train[0].content).routine == expected


def test_an_unknown_routine_fails_the_reply_listing_the_known_ones(server_identity: None) -> None:
    # Prepare
    cfg = build_config({"num-clients": 3})
    shared, task = global_arrays(cfg, "digit")
    # Execute / Assert: the handler raises (Flower turns it into an error reply)
    with pytest.raises(RegistryError, match=r"did you mean 'fedrep'.*\['default', 'ditto'"):
        handle_train(train_message(shared, task, client_routine="fedrepp"), node_context(0), cfg)


def test_a_routine_named_by_import_path_is_loaded() -> None:
    assert isinstance(resolve_routine("fedmtl.routines.ditto:DittoRoutine"), DittoRoutine)
    with pytest.raises(RegistryError, match="cannot be imported"):
        resolve_routine("no_such_module:Routine")
    with pytest.raises(RegistryError, match="not a ClientRoutine"):
        resolve_routine("fedmtl.records:Instruction")


def test_a_plugin_strategys_module_is_imported_to_find_its_routine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a strategy module nobody imported yet that registers a routine
    (tmp_path / "my_plugin_strategy.py").write_text(
        "from fedmtl.routines import ClientRoutine, register_routine\n"
        "class MyStrategy: ...\n"
        "@register_routine('my-plugin-routine')\n"
        "class MyRoutine(ClientRoutine): ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(ROUTINES, "_items", dict(ROUTINES._items))  # forgotten after the test
    monkeypatch.delitem(sys.modules, "my_plugin_strategy", raising=False)
    # Execute
    with pytest.raises(RegistryError, match="unknown client routine"):
        resolve_routine("my-plugin-routine", strategy="fedavg")
    found = resolve_routine("my-plugin-routine", strategy="my_plugin_strategy:MyStrategy")
    # Assert
    assert type(found).__name__ == "MyRoutine"
    monkeypatch.delitem(sys.modules, "my_plugin_strategy")


def test_a_known_key_the_routine_would_ignore_is_refused() -> None:
    with pytest.raises(ValueError, match=r"does not read \['head-epochs'\].*\['fedrep'\]"):
        routine_for(Instruction(head_epochs=2))
    with pytest.raises(ValueError, match=r"\['personal-lambda'\].*\['ditto'\]"):
        routine_for(Instruction(routine="fedrep", head_epochs=1, personal_lambda=0.1))
    assert isinstance(routine_for(Instruction(routine="fedrep", head_epochs=1)), FedRepRoutine)


def test_fedrep_fits_the_head_on_the_received_body_then_the_body(server_identity: None) -> None:
    # Prepare: FedRep's scopes (heads local) and the two phases by hand
    cfg = resolve_run(build_config({"strategy": "fedrep", "num-clients": 3}))
    shared, task = global_arrays(cfg, "digit")
    data = client_data(partition_spec(cfg), 0)
    model = fresh_model(cfg)
    trainable = trainable_keys(cfg, model, data.task)
    head = {k for k in trainable if k.startswith("heads.digit.")}
    settings = round_settings(cfg, 0)
    head_settings = dataclasses.replace(settings, epochs=2)
    train_local(model, data.task, data.x_train, data.y_train, head_settings, head)
    train_local(model, data.task, data.x_train, data.y_train, settings, trainable - head)
    expected = export_arrays(model, keys_in(run_scopes(cfg), "shared"))
    # Execute
    message = train_message(shared, task, client_routine="fedrep", head_epochs=2)
    sent = reply_arrays(handle_train(message, node_context(0), cfg))
    # Assert
    for key, value in expected.items():
        np.testing.assert_array_equal(sent[key], value, err_msg=key)
    with pytest.raises(ValueError, match="head-epochs >= 1"):
        handle_train(train_message(shared, task, client_routine="fedrep"), node_context(0), cfg)


def test_ditto_needs_its_lambda(server_identity: None) -> None:
    cfg = resolve_run(build_config({"strategy": "ditto", "num-clients": 3}))
    shared, task = global_arrays(cfg, "digit")
    with pytest.raises(ValueError, match=PERSONAL_LAMBDA):
        handle_train(train_message(shared, task, client_routine="ditto"), node_context(0), cfg)


def test_a_bad_config_value_fails_the_reply_naming_the_key(server_identity: None) -> None:
    cfg = build_config({"num-clients": 3})
    shared, task = global_arrays(cfg, "digit")
    message = evaluate_message(shared, task, head_finetune_epochs=1.5)
    with pytest.raises(ValueError, match="'head-finetune-epochs' must be int"):
        handle_evaluate(message, node_context(0), cfg)


@pytest.mark.parametrize("handler", [handle_train, handle_evaluate])
def test_handlers_decode_call_and_encode_in_under_40_lines(handler: object) -> None:
    source = inspect.getsource(handler)  # type: ignore[arg-type]
    assert len(source.splitlines()) < 40
    assert not re.search(r"^\s+(if|elif|for) ", source, re.MULTILINE)  # no branch per algorithm
    for word in (HEAD_EPOCHS, "attack", "PERSONAL", "keep_from"):
        assert word not in source, word
