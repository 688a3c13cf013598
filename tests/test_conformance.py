"""The conformance kit over every registered strategy, and proof that it can fail."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedMedian, Krum

from fedmtl.records import METRICS, NUM_EXAMPLES, from_record, to_record
from strategies import available_strategies
from strategies.testing import (
    BUILTIN_TRAITS,
    CHECKS,
    StrategyConformance,
    check_deterministic,
    check_identical_replies_keep_weights,
    check_sample_weights_respected,
    check_state_survives_checkpoint,
    check_task_scope_robust,
    traits_of,
)

# Options a registered strategy needs to be built (none so far).
OPTIONS: dict[str, dict[str, Any]] = {}


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("name", available_strategies())
def test_registered_strategy_conforms(name: str, check: str) -> None:
    CHECKS[check](name, OPTIONS.get(name))


def test_momentum_state_survives_checkpoint() -> None:
    # FedAvgM's defaults carry no momentum; with it, round 2 depends on round 1's state.
    check_state_survives_checkpoint("fedavgm", {"server-momentum": 0.9})


# ------------------------------------------------------- strategies that break
class NoisyUnweightedFedAvg(FedAvg):
    """Claims to be a weighted mean, ignores num-examples and adds unseeded noise."""

    conformance_traits = ("weighted-mean",)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        unweighted = []
        for reply in replies:
            content = RecordDict(dict(reply.content.items()))
            content[METRICS] = MetricRecord({NUM_EXAMPLES: 1, "loss": 0.0})
            unweighted.append(Message(content=content, metadata=reply.metadata))  # type: ignore[call-overload]
        arrays, metrics = super().aggregate_train(server_round, unweighted)
        assert arrays is not None
        rng = np.random.default_rng()  # fresh OS entropy: not reproducible
        noisy = {
            k: v + rng.normal(0, 1e-2, v.shape).astype(v.dtype)
            for k, v in from_record(arrays).items()
        }
        return to_record(noisy), metrics


class ForgetfulFedAdam(FedAdam):
    """Its own state_dict forgets the moments, so a resumed run diverges."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


class MeanHeadsFedMedian(FedMedian):
    """A median on the shared scope that averages its task groups with a plain mean."""

    task_aggregation = "mean"


NOISY = f"{__name__}:NoisyUnweightedFedAvg"
FORGETFUL = f"{__name__}:ForgetfulFedAdam"


@pytest.mark.parametrize(
    "check",
    [check_sample_weights_respected, check_deterministic, check_identical_replies_keep_weights],
)
def test_noisy_unweighted_strategy_fails(check: Any) -> None:
    with pytest.raises(AssertionError):
        check(NOISY)


def test_forgetful_strategy_fails_checkpoint_check_only() -> None:
    with pytest.raises(AssertionError, match="after a checkpoint"):
        check_state_survives_checkpoint(FORGETFUL)
    check_deterministic(FORGETFUL)  # otherwise a correct FedAdam


def test_plain_mean_fails_weight_check_when_declared_weighted() -> None:
    # FedMedian of two replies is their plain mean: (a + b) / 2, not (a + 3b) / 4.
    with pytest.raises(AssertionError, match="num-examples 1 and 3"):
        check_sample_weights_respected("fedmedian", traits=["weighted-mean"])


def test_robust_strategy_averaging_its_heads_fails_the_task_scope_check() -> None:
    with pytest.raises(AssertionError, match="task rule 'mean'"):
        check_task_scope_robust(f"{__name__}:MeanHeadsFedMedian")
    with pytest.raises(pytest.skip.Exception, match="not robust"):
        check_task_scope_robust("fedavg")


# ------------------------------------------------------------------ traits
def test_weight_check_is_skipped_for_strategies_that_are_not_means() -> None:
    with pytest.raises(pytest.skip.Exception, match="not a weighted mean"):
        check_sample_weights_respected("krum")


def test_traits_come_from_the_table_the_class_or_the_override() -> None:
    assert traits_of(FedAvg()) == {"weighted-mean"}
    assert traits_of(FedAdam()) == {"server-optimizer"}
    assert traits_of(Krum()) == {"robust"}
    assert traits_of(FedAvgM()) == {"server-optimizer"}
    assert traits_of(NoisyUnweightedFedAvg()) == {"weighted-mean"}
    assert traits_of(ForgetfulFedAdam()) == frozenset()  # exact class only
    assert traits_of(FedAvg(), override=["robust"]) == {"robust"}
    assert all(isinstance(cls, type) for cls in BUILTIN_TRAITS)


# --------------------------------------------------- the subclassable suite
class TestUserStrategyThroughTheKit(StrategyConformance):
    """How a user runs the kit: one subclass naming their strategy."""

    strategy = "tests.example_plugin:HalfStepFedAvg"
    options: ClassVar[dict[str, Any]] = {"step": 0.5}


def test_kit_class_collects_one_test_per_check() -> None:
    tests = [n for n in dir(StrategyConformance) if n.startswith("test_")]
    assert len(tests) == len(CHECKS)
    assert not StrategyConformance.__name__.startswith("Test")  # not collected by itself
