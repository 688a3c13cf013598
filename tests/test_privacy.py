"""Client-level differential privacy (``dp``): clipping, noise, accounting, budget, config.

Unit tests drive :class:`strategies.privacy.ClientPrivacy` with fake replies;
whole runs go through the real ServerApp and ClientApp in this process
(``tests/inprocess_grid.py``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import GaussianPrivacyEvent, PrivacyConfig, RdpAccountant
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.privacy_accounting import NeighboringRelation, SamplingMethod

from fedmtl.assembly import resolve_run
from fedmtl.checkpoint import load_checkpoint, resume_point, rounds_after
from fedmtl.cli import run_exit_status
from fedmtl.config import ConfigError
from fedmtl.privacy import (
    budget_stop_message,
    last_round,
    local_privacy,
    noise_multiplier,
    solve_noise_multiplier,
)
from fedmtl.records import ARRAYS, CONFIG, TASK_ARRAYS, ClientInfo, Instruction, from_record
from fedmtl.results import METRICS_FILE, RunDirectory, read_metrics
from fedmtl.run_model import check_private_scopes
from fedmtl.server_app import run_server
from strategies import ScopedStrategy
from strategies.privacy import (
    AdaptiveClipping,
    ClientPrivacy,
    PrivacyAccounting,
    SentArrays,
    UniformWeights,
)
from strategies.round_log import RoundLog
from strategies.screening import ValidReply
from tests.e2e_helpers import small
from tests.factories import train_reply
from tests.inprocess_grid import InProcessGrid, device_context

pytest.importorskip("dp_accounting")
DELTA = 1e-5


def _valid(replies: list[Message]) -> list[ValidReply]:
    return [(r, ClientInfo.from_content(r.content)) for r in replies]


def _accountant_epsilon(z: float, m: int, n: int, rounds: int, delta: float = DELTA) -> float:
    """ε straight from Flower's accountant: m of n without replacement, replace-one, z / 2."""
    acc = RdpAccountant(
        PrivacyConfig(delta, n, NeighboringRelation.REPLACE_ONE, SamplingMethod.WITHOUT_REPLACEMENT)
    )
    acc.compose(GaussianPrivacyEvent(z / 2, m, n), rounds)
    return acc.get_epsilon(delta)


# ------------------------------------------------------------------ clipping and noise
def test_whole_update_is_clipped_with_one_norm(server_identity: None) -> None:
    # Prepare: a shared update of norm 3 and a task update of norm 4 (joint norm 5)
    sent = SentArrays(
        {"w": np.zeros(2, np.float32)}, {"digit": {"heads.digit.w": np.zeros(2, np.float32)}}
    )
    reply = train_reply(
        1,
        "digit",
        10,
        {"w": np.array([3.0, 0.0], np.float32)},
        {"heads.digit.w": np.array([0.0, 4.0], np.float32)},
    )
    stage = ClientPrivacy("central", 1.0, 0.0, PrivacyAccounting(0.0, 1, 1, DELTA))

    # Execute
    [(out, _)] = stage(1, _valid([reply]), sent, RoundLog())

    # Assert: both scopes scaled by 1 / 5 (Flower's clip), the task part included
    np.testing.assert_allclose(from_record(out.content[ARRAYS])["w"], [0.6, 0.0], rtol=1e-6)
    task = from_record(out.content[TASK_ARRAYS])["heads.digit.w"]
    np.testing.assert_allclose(task, [0.0, 0.8], rtol=1e-6)


def test_within_the_clip_and_without_noise_a_reply_is_the_same_object(
    server_identity: None,
) -> None:
    sent = SentArrays({"w": np.zeros(3, np.float32)})
    reply = train_reply(1, "digit", 10, {"w": np.array([0.1, 0.2, 0.3], np.float32)})
    stage = ClientPrivacy("central", 1e9, 0.0, PrivacyAccounting(0.0, 1, 1, DELTA))

    [(out, _)] = stage(1, _valid([reply]), sent, RoundLog())

    assert out is reply


def test_noise_std_of_each_aggregate_is_z_clip_over_its_clients(server_identity: None) -> None:
    # Prepare: 4 replies that did not move (update 0); tasks a (3 holders) and b (1)
    z, clip, size = 1.5, 2.0, 40_000
    shared0 = {"w": np.zeros(size, np.float32)}
    heads = {
        "a": {"heads.a.w": np.zeros(size, np.float32)},
        "b": {"heads.b.w": np.zeros(size, np.float32)},
    }
    tasks = ["a", "a", "a", "b"]
    replies = [train_reply(i, t, 10, shared0, heads[t], client_id=i) for i, t in enumerate(tasks)]
    stage = ClientPrivacy("central", clip, z, PrivacyAccounting(z, 4, 8, DELTA), seed=3)

    # Execute
    out = stage(1, _valid(replies), SentArrays(shared0, heads), RoundLog())

    # Assert: the uniform mean over the 4 replies, and each task's mean over its holders
    shared_mean = np.mean([from_record(r.content[ARRAYS])["w"] for r, _ in out], axis=0)
    a_mean = np.mean(
        [from_record(r.content[TASK_ARRAYS])["heads.a.w"] for r, i in out if i.task == "a"], axis=0
    )
    b_only = from_record(out[3][0].content[TASK_ARRAYS])["heads.b.w"]
    for values, clients in ((shared_mean, 4), (a_mean, 3), (b_only, 1)):
        assert np.std(values) == pytest.approx(z * clip / clients, rel=0.02)
        assert abs(np.mean(values)) < 5 * z * clip / clients / math.sqrt(size)


def test_seeded_noise_repeats_and_unseeded_noise_does_not(server_identity: None) -> None:
    sent = SentArrays({"w": np.zeros(50, np.float32)})

    def draw(seed: int | None) -> np.ndarray:
        reply = train_reply(1, "digit", 10, sent.shared)
        stage = ClientPrivacy("central", 1.0, 1.0, PrivacyAccounting(1.0, 1, 2, DELTA), seed=seed)
        [(out, _)] = stage(2, _valid([reply]), sent, RoundLog())
        return from_record(out.content[ARRAYS])["w"]

    np.testing.assert_array_equal(draw(7), draw(7))
    assert not np.array_equal(draw(None), draw(None))


def test_uniform_weights_make_every_reply_count_once(server_identity: None) -> None:
    reply = train_reply(1, "digit", 250, {"w": np.zeros(1, np.float32)})

    [(out, _)] = UniformWeights()(1, _valid([reply]), SentArrays({}), RoundLog())

    assert out.content.metric_records["metrics"]["num-examples"] == 1.0
    assert reply.content.metric_records["metrics"]["num-examples"] == 250


def test_adaptive_clip_grows_when_every_update_is_clipped_and_survives_state(
    server_identity: None,
) -> None:
    sent = SentArrays({"w": np.zeros(2, np.float32)})
    replies = [train_reply(i, "digit", 10, {"w": np.array([5.0, 0.0], np.float32)}) for i in (1, 2)]
    adaptive = AdaptiveClipping(target_quantile=0.5, learning_rate=0.2, clipped_count_stddev=None)
    stage = ClientPrivacy(
        "central", 1.0, 0.0, PrivacyAccounting(0.0, 2, 2, DELTA), adaptive=adaptive
    )

    stage(1, _valid(replies), sent, RoundLog())

    assert stage.clip == pytest.approx(math.exp(0.2 * 0.5))  # clipped fraction 1 > 0.5
    fresh = ClientPrivacy(
        "central", 1.0, 0.0, PrivacyAccounting(0.0, 2, 2, DELTA), adaptive=adaptive
    )
    fresh.load_state(stage.state())
    assert fresh.clip == stage.clip and fresh.accounting.rounds == 1


def test_local_dp_clips_and_noises_the_client_reply(server_identity: None) -> None:
    # Prepare: received zeros, an update of norm 10 in shared + task arrays
    cfg = small(
        Path("/tmp"),
        **{"dp": "local", "dp-clip": 0.5, "dp-noise-multiplier": 2.0, "dp-seeded-noise": True},
    )
    instruction = Instruction(server_round=1).encode()
    msg = Message(
        RecordDict(
            {
                ARRAYS: train_reply(0, "digit", 1, {"w": np.zeros(20_000, np.float32)}).content[
                    ARRAYS
                ],
                TASK_ARRAYS: train_reply(0, "digit", 1, {"h": np.zeros(4, np.float32)}).content[
                    ARRAYS
                ],
                CONFIG: ConfigRecord(dict(instruction)),
            }
        ),
        dst_node_id=5,
        message_type=MessageType.TRAIN,
    )
    big = np.full(20_000, 10 / math.sqrt(20_000), np.float32)
    reply = train_reply(5, "digit", 10, {"w": big}, {"h": np.zeros(4, np.float32)}).content

    # Execute
    out = local_privacy(cfg, 2.0, msg, reply)

    # Assert: mean = the clipped update (0.5 / 10 of it), std = z * clip
    shared = from_record(out[ARRAYS])["w"]
    assert np.mean(shared) == pytest.approx(float(big[0]) * 0.05, abs=0.05)
    assert np.std(shared) == pytest.approx(2.0 * 0.5, rel=0.03)
    assert TASK_ARRAYS in out.array_records


# ------------------------------------------------------------------ accounting
def test_noise_solved_for_a_target_epsilon_reaches_it() -> None:
    z = solve_noise_multiplier(4.0, 10, 6, 6, DELTA)

    assert _accountant_epsilon(z, 6, 6, 10) <= 4.0
    assert _accountant_epsilon(z * 0.99, 6, 6, 10) > 4.0


def _run(tmp_path: Path, clients: int, **overrides: Any) -> Path:
    torch.set_num_threads(1)
    cfg = resolve_run(small(tmp_path, **{"num-clients": clients, **overrides}))
    contexts = {100 + c: device_context(100 + c, {"partition-id": c}) for c in range(clients)}
    run = RunDirectory.create(cfg)
    run_server(InProcessGrid(contexts, cfg), cfg, run)
    return run.path


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("time", "privacy")}


# Batch-norm statistics stay local under DP (check_private_scopes)
STATS_LOCAL = ["heads.*", "*.num_batches_tracked", "*.running_mean", "*.running_var"]
TASK_SCOPE = {
    "tasks": ["digit", "parity"],
    "scope-task": ["heads.*"],
    "scope-local": STATS_LOCAL[1:],
    "client-weighting": "uniform",
}


@pytest.mark.parametrize("mode", ["central", "local"])
def test_dp_with_noise_zero_and_a_huge_clip_is_the_plain_run_bit_for_bit(
    tmp_path: Path, mode: str, server_identity: None
) -> None:
    # Prepare / Execute: the same uniform-weighted run, with and without DP
    plain = _run(tmp_path / "plain", 4, **TASK_SCOPE)
    private = _run(
        tmp_path / "dp",
        4,
        **TASK_SCOPE,
        dp="central",
        **{"dp-clip": 1e9, "dp-noise-multiplier": 0.0},
    )

    # Assert: every metric line and every saved array equal
    plain_rows = read_metrics(plain / METRICS_FILE)
    private_rows = read_metrics(private / METRICS_FILE)
    assert [_comparable(r) for r in plain_rows] == [_comparable(r) for r in private_rows]
    assert all("epsilon" not in r.get("privacy", {}) for r in private_rows)  # no guarantee
    files = sorted(p.name for p in (plain / "final").iterdir())
    assert "task-digit.npz" in files and files == sorted(
        p.name for p in (private / "final").iterdir()
    )
    for name in files:
        with np.load(plain / "final" / name) as a, np.load(private / "final" / name) as b:
            assert a.files == b.files
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])


def test_logged_epsilon_is_the_accountants_and_the_budget_stops_cleanly(
    tmp_path: Path, server_identity: None
) -> None:
    # Prepare: 2 of 4 clients per round; a budget between epsilon(2) and epsilon(3)
    z = 1.2
    budget = (_accountant_epsilon(z, 2, 4, 2) + _accountant_epsilon(z, 2, 4, 3)) / 2
    overrides = {
        "dp": "central",
        "client-weighting": "uniform",
        "fraction-train": 0.5,
        "dp-noise-multiplier": z,
        "dp-clip": 0.5,
        "dp-max-epsilon": budget,
        "scope-local": STATS_LOCAL,
        "num-rounds": 5,
        "checkpoint-every": 1,
        "dp-delta": DELTA,
    }

    # Execute
    path = _run(tmp_path, 4, **overrides)

    # Assert: rounds 1-2 ran, each epsilon the accountant's to 1e-9
    records = read_metrics(path / METRICS_FILE)
    assert [r["round"] for r in records] == [0, 1, 2]
    for record in records[1:]:
        expected = _accountant_epsilon(z, 2, 4, record["round"])
        assert record["privacy"]["epsilon"] == pytest.approx(expected, abs=1e-9)
        assert record["privacy"]["noise-multiplier"] == z
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "ok"
    assert summary["stopped"].startswith("privacy budget: round 3 would take epsilon")
    assert summary["privacy"]["epsilon"] == pytest.approx(_accountant_epsilon(z, 2, 4, 2), abs=1e-9)
    assert run_exit_status(path) == 0
    assert "Stopped early: privacy budget" in (path / "report.md").read_text()
    assert load_checkpoint(path).server_round == 2  # kept: the stop round's checkpoint


def test_a_resume_may_not_change_the_rounds_a_target_epsilon_was_solved_for(
    tmp_path: Path, server_identity: None
) -> None:
    # Prepare: a checkpointed 1-round run whose z was solved for epsilon 8 after 1 round
    private = {"dp": "central", "client-weighting": "uniform", "dp-clip": 0.5,
               "scope-local": STATS_LOCAL, "checkpoint-every": 1}  # fmt: skip
    path = _run(tmp_path, 3, **private, **{"dp-epsilon": 8.0, "num-rounds": 1})

    def resumed(**changes: Any) -> Any:
        settings = {"num-clients": 3, **private, "dp-epsilon": 8.0, "num-rounds": 1, **changes}
        return resolve_run(small(tmp_path, **settings))

    # Execute / Assert: more rounds would price round 1 at the new, larger z
    with pytest.raises(ConfigError, match="solved for that many rounds") as info:
        resume_point(path, resumed(**{"num-rounds": 3}))
    assert info.value.key == "num-rounds"
    assert resume_point(path, resumed()).server_round == 1


def test_rounds_run_after_the_checkpoint_count_again_when_resumed(
    tmp_path: Path, server_identity: None
) -> None:
    # Prepare: 2 rounds checkpointed; then a round 3 that ran before the server died
    z = 1.0
    private = {"dp": "central", "client-weighting": "uniform", "dp-clip": 0.5,
               "dp-noise-multiplier": z, "scope-local": STATS_LOCAL, "checkpoint-every": 1,
               "dp-delta": DELTA}  # fmt: skip
    path = _run(tmp_path, 3, **private, **{"num-rounds": 2})
    lines = (path / METRICS_FILE).read_text().splitlines()
    lost = json.loads(lines[-1])
    lost["round"] = 3
    (path / METRICS_FILE).write_text("\n".join([*lines, json.dumps(lost)]) + "\n")
    checkpoint = load_checkpoint(path)
    assert rounds_after(path / METRICS_FILE, checkpoint) == 1
    cfg = resolve_run(small(tmp_path, **{"num-clients": 3, **private, "num-rounds": 4}))
    contexts = {100 + c: device_context(100 + c, {"partition-id": c}) for c in range(3)}

    # Execute: resume to round 4
    run_server(InProcessGrid(contexts, cfg), cfg, RunDirectory(path), resume=checkpoint)

    # Assert: round 3 is redone, and its first release is counted too
    records = read_metrics(path / METRICS_FILE)
    assert [r["round"] for r in records] == [0, 1, 2, 3, 4]
    for record, accounted in zip(records[1:], [1, 2, 4, 5], strict=True):
        expected = _accountant_epsilon(z, 3, 3, accounted)
        assert record["privacy"]["epsilon"] == pytest.approx(expected, abs=1e-9)


def test_the_budget_counts_rounds_redone_after_a_resume() -> None:
    z = 4.0
    budget = (_accountant_epsilon(z, 4, 4, 5) + _accountant_epsilon(z, 4, 4, 6)) / 2
    cfg = resolve_run(small(Path("/tmp"), **CENTRAL, **{"dp-noise-multiplier": z,
                                                         "num-rounds": 50,
                                                         "dp-max-epsilon": budget}))  # fmt: skip
    assert (last_round(cfg), last_round(cfg, redone=2)) == (5, 3)
    message = budget_stop_message(cfg, 3, redone=2)
    assert message is not None and "2 round(s) redone" in message
    assert f"{_accountant_epsilon(z, 4, 4, 6):.4g}" in message


def test_a_budget_below_one_round_runs_no_round(tmp_path: Path, server_identity: None) -> None:
    budget = _accountant_epsilon(1.0, 3, 3, 1) / 2
    overrides = {"dp-noise-multiplier": 1.0, "dp-max-epsilon": budget, "scope-local": STATS_LOCAL}

    path = _run(tmp_path, 3, dp="central", **{"client-weighting": "uniform", **overrides})

    assert [r["round"] for r in read_metrics(path / METRICS_FILE)] == [0]
    summary = json.loads((path / "summary.json").read_text())
    assert summary["status"] == "ok"
    assert summary["stopped"].startswith("privacy budget: round 1 would take epsilon")
    assert run_exit_status(path) == 0


def test_last_round_follows_the_budget() -> None:
    budget = (_accountant_epsilon(4.0, 4, 4, 5) + _accountant_epsilon(4.0, 4, 4, 6)) / 2
    cfg = small(
        Path("/tmp"),
        **{
            "num-clients": 4,
            "dp": "central",
            "client-weighting": "uniform",
            "dp-noise-multiplier": 4.0,
            "num-rounds": 50,
            "dp-max-epsilon": budget,
        },
    )

    assert last_round(cfg) == 5


def test_target_epsilon_sets_the_noise_multiplier() -> None:
    cfg = small(
        Path("/tmp"),
        **{"num-clients": 4, "dp": "central", "client-weighting": "uniform", "dp-epsilon": 8.0},
    )

    z = noise_multiplier(cfg)

    assert _accountant_epsilon(z, 4, 4, cfg.num_rounds) == pytest.approx(8.0, rel=1e-4)


# ------------------------------------------------------------------ configuration
CENTRAL = {"num-clients": 4, "dp": "central", "client-weighting": "uniform"}


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"dp": "secret"}, "dp"),
        ({**CENTRAL, "dp-clip": 0.0}, "dp-clip"),
        ({**CENTRAL, "dp-clip": float("nan")}, "dp-clip"),
        ({**CENTRAL, "dp-noise-multiplier": float("inf")}, "dp-noise-multiplier"),
        ({**CENTRAL, "dp-noise-multiplier": -1.0}, "dp-noise-multiplier"),
        ({**CENTRAL, "client-weighting": "examples"}, "client-weighting"),
        ({**CENTRAL, "dp-epsilon": 2.0, "dp-noise-multiplier": 1.0}, "dp-noise-multiplier"),
        ({**CENTRAL, "dp-delta": 0.5}, "dp-delta"),
        ({**CENTRAL, "dp-max-epsilon": 4.0}, "dp-max-epsilon"),
        ({**CENTRAL, "min-available-clients": 2}, "min-available-clients"),
        ({**CENTRAL, "task-aggregation": "median"}, "task-aggregation"),
        ({**CENTRAL, "dp": "local", "dp-clipping": "adaptive"}, "dp-clipping"),
        ({**CENTRAL, "dp-clipping": "sometimes"}, "dp-clipping"),
        ({**CENTRAL, "dp-target-quantile": 1.5}, "dp-target-quantile"),
    ],
)
def test_bad_settings_name_the_key(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_run(small(Path("/tmp"), **overrides))
    assert info.value.key == key


@pytest.mark.parametrize("strategy", ["fedmedian", "fedtrimmedavg", "krum", "bulyan", "clustered"])
def test_central_dp_refuses_rules_that_discard_or_reweight(strategy: str) -> None:
    with pytest.raises(ConfigError, match="cannot run with dp = 'central'") as info:
        resolve_run(small(Path("/tmp"), **CENTRAL, strategy=strategy))
    assert info.value.key == "strategy"


def test_central_dp_checks_the_shared_rule_whatever_task_aggregation_says() -> None:
    with pytest.raises(ConfigError, match="cannot run with dp = 'central'") as info:
        resolve_run(small(Path("/tmp"), **CENTRAL, strategy="fedmedian",
                          **{"task-aggregation": "mean"}))  # fmt: skip
    assert info.value.key == "strategy"


@pytest.mark.parametrize("option", ["min-train-nodes", "fraction-train", "fraction_train"])
def test_central_dp_refuses_sampling_set_through_strategy_options(option: str) -> None:
    options = {option: 3 if option == "min-train-nodes" else 1.0}
    with pytest.raises(ConfigError, match="fraction-train instead") as info:
        resolve_run(small(Path("/tmp"), **CENTRAL, **{"strategy-options": options}))
    assert info.value.key == "strategy-options"


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "fedadam"])
def test_central_dp_accepts_mean_based_strategies(strategy: str) -> None:
    resolve_run(small(Path("/tmp"), **CENTRAL, strategy=strategy))


def test_the_stage_state_travels_in_the_strategy_state(server_identity: None) -> None:
    def strategy() -> ScopedStrategy:
        stage = ClientPrivacy("central", 1.0, 1.0, PrivacyAccounting(1.0, 2, 4, DELTA))
        return ScopedStrategy(FedAvg(), stages=[UniformWeights(), stage])

    before = strategy()
    before.stages[1].accounting.step(3)  # type: ignore[attr-defined]
    after = strategy()

    after.load_state_dict(before.state_dict())

    assert after.stages[1].accounting.rounds == 3  # type: ignore[attr-defined]


def test_batch_norm_statistics_leaving_clients_are_refused_with_dp(tmp_path: Path) -> None:
    # Noise on a running variance makes it negative: the run must refuse, naming scope-local
    cfg = resolve_run(small(tmp_path, **CENTRAL))

    with pytest.raises(ConfigError, match=r"scope-local.*running_var"):
        check_private_scopes(cfg)
    check_private_scopes(resolve_run(small(tmp_path, **CENTRAL, **{"scope-local": STATS_LOCAL})))
