"""Fine-tuning modes: which backbone parameters train and travel, LoRA adapters."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fedmtl.config import ConfigError, build_config
from fedmtl.models import BackboneOptionError, build_backbone
from fedmtl.models.lora import apply_lora
from fedmtl.run_model import initial_model, run_scopes
from fedmtl.scope_table import finetune_modes_table, summarize_scopes
from fedmtl.scopes import ScopeRules, finetune_frozen_patterns, scope_of
from tests.extras import needs_lora

BLOCKS = [("conv1", "bn1"), ("conv2", "bn2"), ("proj",)]


def _scopes(**values: Any) -> dict[str, str]:
    return run_scopes(build_config({"pretrained": "none", **values}))


@pytest.mark.parametrize(
    ("mode", "k", "frozen", "trainable"),
    [
        ("full", 1, [], ["backbone.conv1.weight", "backbone.proj.bias"]),
        ("frozen", 1, ["backbone.conv1.weight", "backbone.proj.bias"], []),
        ("last-k", 1, ["backbone.conv1.weight", "backbone.bn2.weight"], ["backbone.proj.weight"]),
        ("last-k", 2, ["backbone.bn1.bias"], ["backbone.bn2.weight", "backbone.proj.weight"]),
        (
            "lora",
            1,
            ["backbone.proj.base_layer.weight", "backbone.bn1.weight"],
            ["backbone.proj.lora_A.default.weight", "backbone.conv1.lora_B.default.weight"],
        ),
    ],
)
def test_mode_patterns_freeze_exactly_what_the_mode_says(
    mode: str, k: int, frozen: list[str], trainable: list[str]
) -> None:
    # Prepare
    rules = ScopeRules(frozen=finetune_frozen_patterns(mode, BLOCKS, k))
    # Assert: heads are never frozen by a mode
    for name in frozen:
        assert scope_of(name, rules) == "frozen", name
    for name in [*trainable, "heads.digit.weight"]:
        assert scope_of(name, rules) != "frozen", name


def test_last_k_does_not_confuse_blocks_sharing_a_prefix() -> None:
    # "layer.1" must not unfreeze "layer.10"
    blocks = [(f"encoder.layer.{i}",) for i in range(12)]
    rules = ScopeRules(frozen=finetune_frozen_patterns("last-k", blocks, 1))
    assert scope_of("backbone.encoder.layer.11.output.dense.weight", rules) == "shared"
    assert scope_of("backbone.encoder.layer.1.output.dense.weight", rules) == "frozen"
    assert scope_of("backbone.encoder.layer.10.output.dense.weight", rules) == "frozen"


def test_last_k_needs_blocks_and_modes_are_checked() -> None:
    with pytest.raises(ValueError, match="blocks"):
        finetune_frozen_patterns("last-k", [], 1)
    with pytest.raises(ValueError, match="'partial'"):
        finetune_frozen_patterns("partial")
    with pytest.raises(ConfigError, match="finetune"):
        build_config({"finetune": "lorra"})


def test_run_scopes_apply_the_mode_over_the_runs_rules() -> None:
    # Execute
    last = _scopes(**{"finetune": "last-k", "finetune-blocks": 1})
    frozen = _scopes(finetune="frozen")
    # Assert
    assert last["backbone.proj.weight"] == "shared"
    assert last["backbone.conv2.weight"] == "frozen"
    assert last["heads.digit.weight"] == "local"  # the run's own rules still apply
    assert {s for k, s in frozen.items() if k.startswith("backbone.")} == {"frozen"}


@needs_lora
def test_lora_adds_zero_initialised_adapters_that_change_nothing_at_first() -> None:
    # Prepare
    torch.manual_seed(0)
    backbone = build_backbone("digits-cnn")
    backbone.eval()
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        before = backbone(x)
    # Execute
    apply_lora(backbone, rank=4, alpha=8.0, seed=3)
    # Assert
    names = [name for name, _ in backbone.named_parameters()]
    assert "proj.lora_A.default.weight" in names and "proj.base_layer.weight" in names
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), before)


@needs_lora
def test_lora_init_is_seeded() -> None:
    def adapters(seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        net = apply_lora(build_backbone("digits-cnn"), seed=seed)
        return net.state_dict()["proj.lora_A.default.weight"]

    assert torch.equal(adapters(1), adapters(1))
    assert not torch.equal(adapters(1), adapters(2))


@needs_lora
def test_lora_targets_that_match_nothing_are_refused() -> None:
    with pytest.raises(BackboneOptionError, match="nothing_here"):
        apply_lora(build_backbone("digits-cnn"), targets=["nothing_here"])


@needs_lora
def test_scope_summary_counts_what_trains_and_what_travels() -> None:
    # Prepare
    cfg = build_config({"pretrained": "none", "finetune": "lora", "lora-rank": 2})
    model = initial_model(cfg)
    lora = {n: p.numel() for n, p in model.named_parameters() if ".lora_" in n}
    heads = sum(p.numel() for n, p in model.named_parameters() if n.startswith("heads."))
    # Execute
    summary = summarize_scopes(cfg)
    # Assert: adapters and heads train; only adapters (float32) travel
    assert summary.trainable == sum(lora.values()) + heads
    assert summary.sent_values["digit"] == sum(lora.values())
    assert summary.sent_bytes["digit"] == 4 * sum(lora.values())


@needs_lora
def test_modes_table_lists_every_mode_with_less_traffic_than_full() -> None:
    table = finetune_modes_table(build_config({"pretrained": "none"}))
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert set(rows) == {"full", "frozen", "last-k (k=1)", "lora"}
    sent = {
        m: int(r.split("|")[3].strip().removesuffix(" B").replace(",", "")) for m, r in rows.items()
    }
    assert sent["frozen"] == 0
    assert 0 < sent["lora"] < sent["full"] and 0 < sent["last-k (k=1)"] < sent["full"]


def test_fresh_models_share_frozen_tensors_and_copy_the_rest() -> None:
    # Prepare
    from fedmtl.run_model import fresh_model

    cfg = build_config({"pretrained": "none", "finetune": "last-k"})
    scopes = run_scopes(cfg)
    # Execute
    a, b = fresh_model(cfg), fresh_model(cfg)
    # Assert: frozen tensors are the same objects; trainable ones are independent copies
    state_a, state_b = a.state_dict(keep_vars=True), b.state_dict(keep_vars=True)
    for name, scope in scopes.items():
        same = state_a[name] is state_b[name]
        assert same == (scope == "frozen"), name
    with torch.no_grad():
        a.backbone.proj.weight.add_(1.0)
    assert not torch.equal(a.backbone.proj.weight, b.backbone.proj.weight)


def test_fresh_models_share_all_frozen_submodules_and_copy_mixed_ones() -> None:
    # Prepare
    from fedmtl.run_model import fresh_model

    frozen = build_config({"pretrained": "none", "finetune": "frozen"})
    last_k = build_config({"pretrained": "none", "finetune": "last-k"})
    # Execute
    a, b = fresh_model(frozen), fresh_model(frozen)
    c, d = fresh_model(last_k), fresh_model(last_k)
    # Assert: a frozen backbone is one object (no walk of its tree per message); heads,
    # and a backbone with a trainable block, are copies per model
    assert a.backbone is b.backbone is initial_model(frozen).backbone
    assert a.heads is not b.heads
    assert c.backbone is not d.backbone


def test_freeze_modes_puts_exactly_the_all_frozen_modules_in_eval_mode() -> None:
    # Prepare: a trainable head beside a frozen body holding a dropout and a half-frozen block
    from fedmtl.training import trainable_parameters

    frozen_body = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    half = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model = torch.nn.Sequential(frozen_body, half, torch.nn.Linear(2, 2))
    model.eval()
    # Execute: only half[1] and the last layer train
    trainable_parameters(model, {"1.1.weight", "1.1.bias", "2.weight", "2.bias"})
    # Assert
    assert not frozen_body.training and not frozen_body[1].training and not half[0].training
    assert model.training and half.training and half[1].training and model[2].training
