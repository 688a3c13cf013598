"""DP-SGD local training (fedmtl.private_training): clipping, noise, ε vs Opacus, client state."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F  # noqa: N812

from fedmtl.assembly import resolve_run
from fedmtl.client_app import handle_train
from fedmtl.client_state import ClientStateStore
from fedmtl.config import ExperimentConfig, build_config
from fedmtl.data.federation import ClientData, PartitionSpec, client_data
from fedmtl.features import extract_features
from fedmtl.metrics import ClientRow
from fedmtl.models import MultiTaskModel, build_model
from fedmtl.private_training import (
    DP_SGD_STATE,
    DpSgdError,
    DpSgdSettings,
    PrivacyLedger,
    epsilon,
    private_train_local,
)
from fedmtl.records import DP_SGD_DELTA, DP_SGD_EPSILON
from fedmtl.results.dp_sgd import dp_sgd_summary, dp_sgd_table
from fedmtl.results.round_record import PhaseRecord, RoundRecord
from fedmtl.training import TrainSettings
from tests.client_helpers import global_arrays, node_context, train_message

opacus = pytest.importorskip("opacus")
from opacus.accountants import PRVAccountant  # noqa: E402
from opacus.accountants.analysis import rdp as rdp_analysis  # noqa: E402
from opacus.data_loader import DPDataLoader  # noqa: E402

TASKS = {"digit": 10, "parity": 2, "ge5": 2}
SPEC = PartitionSpec(dataset="digits", tasks=tuple(TASKS), num_clients=6, partitioner="iid")
PLAIN = TrainSettings(epochs=1, batch_size=16, learning_rate=0.5, momentum=0.0)


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data() -> ClientData:
    return client_data(SPEC, 0)


@pytest.fixture(scope="module")
def model() -> MultiTaskModel:
    return build_model("digits-cnn", TASKS, pretrained="none", seed=0)


@pytest.fixture(scope="module")
def features(model: MultiTaskModel, data: ClientData) -> torch.Tensor:
    return extract_features(model.backbone, data.x_train, torch.device("cpu"))


def _head(model: MultiTaskModel) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith("heads.digit.")}


def _batches(n: int, batch_size: int, seed: int, epochs: int = 1) -> list[torch.Tensor]:
    """The Poisson batches a DPDataLoader seeded with ``seed`` draws (noise 0 draws nothing)."""
    indices = torch.utils.data.TensorDataset(torch.arange(n))
    loader = DPDataLoader.from_data_loader(
        torch.utils.data.DataLoader(indices, batch_size=batch_size),
        generator=torch.Generator().manual_seed(seed),
    )
    return [batch for _ in range(epochs) for (batch,) in loader]


@pytest.mark.parametrize("clip", [1e6, 0.05])
def test_noise_free_dp_sgd_is_sgd_on_clipped_per_example_gradients(
    model: MultiTaskModel, data: ClientData, features: torch.Tensor, clip: float
) -> None:
    # Prepare: the same Poisson batches, clipped per example by hand
    # (clip 1e6: nothing is clipped, this is plain SGD on sum-loss / expected batch size)
    private, reference = copy.deepcopy(model), copy.deepcopy(model)
    head = reference.heads["digit"]
    n = len(data.y_train)
    batches = _batches(n, PLAIN.batch_size, seed=3)
    expected_size = round(n / math.ceil(n / PLAIN.batch_size))
    targets = torch.as_tensor(data.y_train, dtype=torch.long)
    clipped_any = False
    for batch in batches:
        total = [torch.zeros_like(p) for p in head.parameters()]
        for i in batch.tolist():
            loss = F.cross_entropy(head(features[i : i + 1]), targets[i : i + 1], reduction="sum")
            grads = torch.autograd.grad(loss, list(head.parameters()))
            norm = torch.sqrt(sum((g**2).sum() for g in grads))
            factor = min(1.0, clip / (float(norm) + 1e-6))
            clipped_any |= factor < 1
            total = [t + factor * g for t, g in zip(total, grads, strict=True)]
        with torch.no_grad():
            for p, t in zip(head.parameters(), total, strict=True):
                p -= PLAIN.learning_rate * t / expected_size
    # Execute
    _, step = private_train_local(
        private, "digit", data.x_train, data.y_train, PLAIN, DpSgdSettings(0.0, clip),
        _head(private), features=features, seed=3,
    )  # fmt: skip
    # Assert
    assert step == (0.0, 1 / math.ceil(n / PLAIN.batch_size), len(batches))
    assert clipped_any == (clip < 1)
    for (name, got), want in zip(
        private.heads["digit"].named_parameters(), head.parameters(), strict=True
    ):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5, msg=name)
    assert not any(hasattr(p, "grad_sample") for p in private.parameters())  # unwrapped


def test_the_noise_has_the_configured_standard_deviation(
    model: MultiTaskModel, data: ClientData, features: torch.Tensor
) -> None:
    # Prepare: noise far above the clipped signal (at most clip * batch per step)
    private = copy.deepcopy(model)
    before = torch.cat([p.detach().flatten() for p in private.heads["digit"].parameters()])
    sigma, clip = 1000.0, 0.01
    # Execute
    _, (_, rate, steps) = private_train_local(
        private, "digit", data.x_train, data.y_train, PLAIN, DpSgdSettings(sigma, clip),
        _head(private), features=features, seed=11,
    )  # fmt: skip
    after = torch.cat([p.detach().flatten() for p in private.heads["digit"].parameters()])
    # Assert: each coordinate moved by lr / E * N(0, (sigma * clip)^2) per step
    expected_size = round(rate * len(data.y_train))
    want = PLAIN.learning_rate / expected_size * sigma * clip * math.sqrt(steps)
    measured = float((after - before).std())
    assert len(after) > 600
    assert measured == pytest.approx(want, rel=0.1)


def test_seeded_noise_repeats_a_fit_and_unseeded_noise_does_not(
    model: MultiTaskModel, data: ClientData, features: torch.Tensor
) -> None:
    # Prepare: `dp-seeded-noise` (reproducible experiments) against the secret default
    def head_after(seeded: bool) -> torch.Tensor:
        private = copy.deepcopy(model)
        ledger = PrivacyLedger(DpSgdSettings(1.0, 1.0, seeded=seeded))
        ledger.train(
            private, "digit", data.x_train, data.y_train, PLAIN, _head(private), features=features
        )
        return torch.cat([p.detach().flatten() for p in private.heads["digit"].parameters()])

    # Execute / Assert
    assert torch.equal(head_after(True), head_after(True))
    assert not torch.equal(head_after(False), head_after(False))


def test_trainable_batch_norm_is_refused(model: MultiTaskModel, data: ClientData) -> None:
    private = copy.deepcopy(model)
    everything = {n for n, _ in private.named_parameters()}
    with pytest.raises(DpSgdError, match=r"backbone\.bn1"):
        private_train_local(
            private, "digit", data.x_train, data.y_train, PLAIN, DpSgdSettings(), everything
        )


def test_raw_inputs_and_cached_features_train_the_same(
    model: MultiTaskModel, data: ClientData, features: torch.Tensor
) -> None:
    # The frozen backbone's features are a fixed function of each example: the head's
    # per-example gradients, so the private update, do not depend on where they come from.
    runs = []
    for cached in (features, None):
        private = copy.deepcopy(model)
        private_train_local(
            private, "digit", data.x_train, data.y_train, PLAIN, DpSgdSettings(1.0, 0.5),
            _head(private), features=cached, seed=5,
        )  # fmt: skip
        runs.append(list(private.heads["digit"].parameters()))
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- accounting


def test_epsilon_equals_opacus_rdp_computed_directly() -> None:
    history = [(1.1, 0.05, 20), (1.1, 0.05, 20), (0.8, 0.1, 7)]
    delta = 1e-5
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    rdp = sum(rdp_analysis.compute_rdp(q=q, noise_multiplier=s, steps=n, orders=orders)
              for s, q, n in history)  # fmt: skip
    want, _ = rdp_analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    assert epsilon(history, delta, "rdp") == pytest.approx(float(want), abs=1e-9)
    assert epsilon([], delta) == 0.0
    assert epsilon([(0.0, 0.05, 3)], delta) == math.inf


def test_epsilon_equals_a_prv_accountant_stepped_through_the_same_rounds() -> None:
    history = [(1.0, 0.05, 20), (1.0, 0.05, 20)]
    accountant = PRVAccountant()
    for noise, rate, steps in history:
        for _ in range(steps):
            accountant.step(noise_multiplier=noise, sample_rate=rate)
    want = accountant.get_epsilon(delta=1e-5)
    assert epsilon(history, 1e-5, "prv") == pytest.approx(want, abs=1e-9)


def test_the_ledger_round_trips_through_a_state_group() -> None:
    settings = DpSgdSettings(1.3, 0.7, 1e-6, "rdp")
    ledger = PrivacyLedger(settings, [(1.3, 0.05, 20), (1.3, 1 / 11, 22)])
    back = PrivacyLedger.from_state(settings, ledger.state())
    assert back.history == ledger.history
    assert back.epsilon() == ledger.epsilon()


@pytest.fixture
def dp_cfg(tmp_path: Path) -> ExperimentConfig:
    return resolve_run(
        build_config(
            {
                "num-clients": 3, "finetune": "frozen", "dp-sgd": True,
                "dp-sgd-noise-multiplier": 1.2, "client-state": "disk",
                "output-dir": str(tmp_path), "feature-cache": "off",
            }
        )
    )  # fmt: skip


def test_clients_report_epsilon_growing_over_their_rounds_and_resume_it(
    server_identity: None, dp_cfg: ExperimentConfig
) -> None:
    # Prepare
    shared, task = global_arrays(dp_cfg, "digit")
    context = node_context(0)
    epsilons = []
    # Execute: rounds 1 and 3 (the client was not sampled in round 2)
    for server_round in (1, 3):
        # the checkpoint of round 1 keeps its state version (a resumed run reads it)
        message = train_message(shared, task, server_round=server_round, checkpoint_round=1)
        metrics = handle_train(message, context, dp_cfg).content.metric_records["metrics"]
        epsilons.append(float(metrics[DP_SGD_EPSILON]))
        assert float(metrics[DP_SGD_DELTA]) == 1e-5
    # Assert: the state holds each fit's (noise, rate, steps); epsilon is Opacus's over it
    store = ClientStateStore("disk", str(dp_cfg.output_dir) + "/client-state")
    after_3 = PrivacyLedger.from_state(DpSgdSettings(1.2), store.load(context, 0, 3)[DP_SGD_STATE])
    after_1 = PrivacyLedger.from_state(DpSgdSettings(1.2), store.load(context, 0, 2)[DP_SGD_STATE])
    assert len(after_1.history) == 1 and len(after_3.history) == 2
    assert after_3.history[0] == after_1.history[0]
    assert all(noise == 1.2 for noise, _, _ in after_3.history)
    assert epsilons[0] < epsilons[1]
    assert epsilons[0] == pytest.approx(epsilon(after_1.history, 1e-5), abs=1e-9)
    assert epsilons[1] == pytest.approx(epsilon(after_3.history, 1e-5), abs=1e-9)


def test_the_summary_and_report_keep_each_clients_final_epsilon() -> None:
    def row(cid: int, eps: float) -> ClientRow:
        return ClientRow(
            cid, "digit", {"num-examples": 10, DP_SGD_EPSILON: eps, DP_SGD_DELTA: 1e-5}
        )

    records = [
        RoundRecord(1, train=PhaseRecord.of([row(0, 0.5), row(1, 0.6)])),
        RoundRecord(2, train=PhaseRecord.of([row(0, 0.9)])),
    ]
    summary = dp_sgd_summary(records)
    assert summary == {
        "delta": 1e-5,
        "epsilon-max": 0.9,
        "clients": {"0": {"epsilon": 0.9, "rounds": 2}, "1": {"epsilon": 0.6, "rounds": 1}},
    }
    table = dp_sgd_table({"dp-sgd": summary})
    assert "| 0 | 0.900 | 2 |" in table and "| 1 | 0.600 | 1 |" in table
    assert dp_sgd_summary([RoundRecord(1)]) is None
    assert np.isfinite(summary["epsilon-max"])


@pytest.mark.parametrize(
    ("strategy", "config", "fits"),
    [
        ("fedprox", {"proximal_mu": 0.5}, 1),
        ("fedrep", {"client_routine": "fedrep", "head_epochs": 1}, 1),  # body frozen: no steps
        ("ditto", {"client_routine": "ditto", "personal_lambda": 0.1}, 2),  # and the personal
    ],
)
def test_every_fit_of_a_routine_is_private_and_accounted(
    server_identity: None, tmp_path: Path, strategy: str, config: dict[str, object], fits: int
) -> None:
    # Prepare
    cfg = resolve_run(
        build_config(
            {
                "num-clients": 3, "finetune": "frozen", "dp-sgd": True, "strategy": strategy,
                "output-dir": str(tmp_path), "client-state": "disk", "feature-cache": "off",
            }
        )
    )  # fmt: skip
    shared, task = global_arrays(cfg, "digit")
    context = node_context(0)
    # Execute
    reply = handle_train(train_message(shared, task, **config), context, cfg)
    # Assert
    metrics = reply.content.metric_records["metrics"]
    store = ClientStateStore("disk", str(tmp_path / "client-state"))
    ledger = PrivacyLedger.from_state(DpSgdSettings(), store.load(context, 0, 1)[DP_SGD_STATE])
    assert len(ledger.history) == fits
    assert float(metrics[DP_SGD_EPSILON]) == pytest.approx(ledger.epsilon(), abs=1e-9)


@pytest.mark.slow
def test_a_dp_sgd_run_records_each_clients_epsilon(tmp_path: Path) -> None:
    # Prepare: the last block (proj, no batch norm) is shared and trains on raw inputs
    from fedmtl.results import read_metrics
    from fedmtl.simulation import simulate
    from tests.e2e_helpers import small

    cfg = small(
        tmp_path, finetune="last-k", **{"dp-sgd": True, "client-state": "disk", "tasks": ["digit"]}
    )
    # Execute
    run_dir = simulate(cfg)
    # Assert: every train row carries epsilon, growing over the rounds
    records = read_metrics(run_dir / "metrics.jsonl")
    by_client: dict[int, list[float]] = {}
    for record in records[1:]:
        for row in record["train"]["clients"]:
            by_client.setdefault(row["client-id"], []).append(row[DP_SGD_EPSILON])
    assert sorted(by_client) == [0, 1, 2]
    assert all(len(e) == 2 and 0 < e[0] < e[1] for e in by_client.values())
    # Assert: the reported epsilon is Opacus's over the history each client kept
    store = ClientStateStore("disk", str(run_dir / "client-state"))
    for cid, eps in by_client.items():
        state = store.load(node_context(cid), cid, 2)[DP_SGD_STATE]
        ledger = PrivacyLedger.from_state(DpSgdSettings(), state)
        assert len(ledger.history) == 2
        assert eps[-1] == pytest.approx(ledger.epsilon(), abs=1e-9)
    summary = json.loads((run_dir / "summary.json").read_text())["dp-sgd"]
    assert summary["epsilon-max"] == max(e[-1] for e in by_client.values())
    assert {int(c): v["epsilon"] for c, v in summary["clients"].items()} == {
        c: e[-1] for c, e in by_client.items()
    }
    assert "DP-SGD (example-level privacy)" in (run_dir / "report.md").read_text()
