"""The per-message shortcuts of issue 14 give what the plain calls give.

Train/eval modes without walking frozen subtrees, state-dict lookups of the
heads only, partitions read without a ``datasets.Dataset`` per client, and the
config's hash built once: each is checked against the plain computation.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch
from torch import nn

from fedmtl.config import build_config
from fedmtl.data import partitioners
from fedmtl.data.federation import PartitionSpec, partition_indices
from fedmtl.models.state import export_arrays, import_arrays, partial_state_dict
from fedmtl.training import set_mode, trainable_parameters


class Overriding(nn.Sequential):
    """A module with its own ``train`` (as transformers' models have); counts mode changes."""

    changes = 0

    def train(self, mode: bool = True) -> Overriding:
        if self.training != mode:
            Overriding.changes += 1
        return super().train(mode)


def _model() -> nn.Module:
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.BatchNorm1d(4))
    backbone = Overriding(block, nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Dropout(0.2))
    heads = nn.ModuleDict({"a": nn.Linear(4, 2), "b": nn.Sequential(nn.Dropout(), nn.Linear(4, 3))})
    model = nn.Module()
    model.backbone = backbone
    model.heads = heads
    model.tied = nn.Linear(4, 4)
    model.tied.weight = backbone[0][0].weight  # one parameter under two names
    return model


def _plain_modes(model: nn.Module, trainable: set[str]) -> None:
    """The reference: everything in train mode, then all-frozen branches in eval mode."""
    model.train()
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)

    def freeze(module: nn.Module) -> None:
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()
            return
        for child in module.children():
            freeze(child)

    freeze(model)


def _modes(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


@pytest.mark.parametrize("seed", range(12))
def test_train_modes_match_train_then_freeze(seed: int) -> None:
    rng = random.Random(seed)
    names = [n for n, _ in _model().named_parameters()]
    for _ in range(3):  # starting from whatever modes the previous call left
        trainable = {n for n in names if rng.random() < 0.4}
        start = rng.choice([True, False])
        fast, plain = _model(), _model()
        fast.train(start)
        plain.train(start)
        params = trainable_parameters(fast, trainable)
        _plain_modes(plain, trainable)
        assert _modes(fast) == _modes(plain)
        assert [p.requires_grad for p in fast.parameters()] == [
            p.requires_grad for p in plain.parameters()
        ]
        assert {id(p) for p in params} == {
            id(p) for n, p in fast.named_parameters() if n in trainable
        }


def test_set_mode_skips_what_is_already_in_mode() -> None:
    model = _model()
    set_mode(model, False)
    assert not any(_modes(model).values())
    before = Overriding.changes
    set_mode(model, False)  # nothing to change: the override is not called again
    assert Overriding.changes == before
    model.heads.train()
    set_mode(model, False)
    assert not any(_modes(model).values())
    assert Overriding.changes == before  # the backbone stayed in eval mode
    set_mode(model, True)
    assert all(_modes(model).values())


def test_partial_state_dict_is_the_state_dict_part() -> None:
    model = _model()
    full = model.state_dict()
    keys = ["heads.b.1.bias", "heads.a.weight"]
    part = partial_state_dict(model, keys)
    assert set(part) == {k for k in full if k.startswith("heads.")}
    for key in part:
        assert torch.equal(part[key], full[key])
        assert part[key].data_ptr() == full[key].data_ptr()
    assert partial_state_dict(model, []) == {}
    assert set(partial_state_dict(model, ["backbone.0.2.running_mean"])) == {
        k for k in full if k.startswith("backbone.")
    }
    exported = export_arrays(model, keys)
    assert list(exported) == keys
    fresh = _model()
    with torch.no_grad():
        fresh.heads.a.weight.zero_()
    import_arrays(fresh, exported)
    assert torch.equal(fresh.heads.a.weight, model.heads.a.weight)
    with pytest.raises(ValueError, match="does not have"):
        import_arrays(fresh, {"heads.c.weight": np.zeros(2)})
    with pytest.raises(ValueError, match="does not have"):
        import_arrays(fresh, {"nowhere.weight": np.zeros(2)})


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet", "pathological"])
@pytest.mark.parametrize("clients", [3, 7, 40])
def test_partitions_read_directly_equal_load_partition(
    partitioner: str, clients: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = PartitionSpec(
        dataset="digits",
        tasks=("digit",),
        num_clients=clients,
        partitioner=partitioner,
        classes_per_client=3,
        seed=clients,
    )
    labels = np.random.default_rng(clients).integers(0, 10, 997).astype(np.int64)
    fast = partition_indices(labels, spec)
    monkeypatch.setattr(
        partitioners,
        "_positions_reader",
        lambda part, order, n: lambda client: part.load_partition(client)["position"],
    )
    slow = partition_indices(labels, spec)
    assert len(fast) == len(slow) == clients
    for a, b in zip(fast, slow, strict=True):
        assert np.array_equal(a, b)


def test_config_hash_is_built_once_and_travels() -> None:
    cfg = build_config({"num-clients": 5, "dataset-options": {}})
    same = build_config({"num-clients": 5})
    assert hash(cfg) == hash(same) and cfg == same
    assert "_canonical" in cfg.__dict__
    cloudpickle = pytest.importorskip("cloudpickle")  # how Ray ships the config to workers
    copy = cloudpickle.loads(cloudpickle.dumps(cfg))
    assert copy == cfg and hash(copy) == hash(build_config({"num-clients": 5}))
    other = dataclasses.replace(cfg, num_clients=6)
    assert other != cfg and "_canonical" not in other.__dict__
    assert {cfg: 1}[same] == 1


def test_indexed_message_lookup_returns_a_nodes_own_messages_in_order() -> None:
    import threading
    from types import SimpleNamespace

    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    from fedmtl.simulation import indexed_message_lookup

    def message(node: int, run: int = 1) -> SimpleNamespace:
        return SimpleNamespace(
            metadata=SimpleNamespace(dst_node_id=node, run_id=run, delivered_at="")
        )

    store = {"a": message(1), "b": message(2), "c": message(1, run=2), "d": message(1)}
    checked: list[set[str]] = []
    state = SimpleNamespace(
        lock=threading.RLock(),
        message_ins_store=store,
        _check_stored_messages=checked.append,
        _fedmtl_by_node={1: dict.fromkeys(["gone", "a", "c", "d"]), 2: {"b": None}},
    )
    before = InMemoryLinkState.get_message_ins
    with indexed_message_lookup():
        get = InMemoryLinkState.get_message_ins
        assert [m is store["a"] for m in get(state, 1, 1)] == [True]  # type: ignore[arg-type]
        assert store["a"].metadata.delivered_at != ""
        assert get(state, 1, None, run_id=1) == [store["d"]]  # type: ignore[arg-type]
        assert get(state, 1, None) == [store["c"]]  # type: ignore[arg-type]
        assert get(state, 3, 1) == []  # type: ignore[arg-type]
        assert "gone" not in state._fedmtl_by_node[1]  # pulled messages leave the index
        assert {"b"} not in checked  # node 2's messages were never looked at
    assert InMemoryLinkState.get_message_ins is before
