"""Task weighting: each scheme against a hand computation on a tiny problem."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest
import torch

from fedmtl.task_weighting import (
    TASK_WEIGHTINGS,
    DynamicWeightAverage,
    PCGrad,
    TaskWeighting,
    UncertaintyWeighting,
    WeightingOptions,
    gradient_cosine,
    make_weighting,
    project_conflicting,
    task_gradient_cosines,
)

TASKS = ("a", "b")
OPTIONS = WeightingOptions(weights={"a": 0.5, "b": 2.0, "c": 1.0}, temperature=2.0)


def _losses(a: float, b: float) -> dict[str, torch.Tensor]:
    return {"a": torch.tensor(a), "b": torch.tensor(b)}


def _vec(*values: float) -> list[torch.Tensor]:
    return [torch.tensor(values, dtype=torch.float64)]


# ---------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"weights": {"a": math.nan}}, "task-weights"),
        ({"weights": {"a": math.inf}}, "task-weights"),
        ({"weights": {"a": -0.1}}, "task-weights"),
        ({"weights": {"a": True}}, "task-weights"),
        ({"temperature": 0.0}, "dwa-temperature"),
        ({"temperature": math.nan}, "dwa-temperature"),
    ],
)
def test_options_refuse_bad_values_naming_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        WeightingOptions(**options)  # type: ignore[arg-type]


def test_tasks_must_be_unique_and_present() -> None:
    with pytest.raises(ValueError, match="at least one task"):
        TaskWeighting((), OPTIONS, 0)
    with pytest.raises(ValueError, match="unique"):
        TaskWeighting(("a", "a"), OPTIONS, 0)


# ------------------------------------------------------------------ equal, fixed


def test_equal_sums_the_losses() -> None:
    weighting = make_weighting("equal", TASKS, OPTIONS, seed=0)
    losses = _losses(2.0, 3.0)

    assert weighting.objective(losses).item() == 5.0
    assert weighting.shared_weights(losses) == {"a": 1.0, "b": 1.0}
    assert weighting.parameters() == []
    assert not weighting.needs_task_gradients


def test_equal_with_one_task_returns_the_loss_itself() -> None:
    loss = torch.tensor(0.75, requires_grad=True)
    assert make_weighting("equal", ["a"], WeightingOptions(), 0).objective({"a": loss}) is loss


@pytest.mark.parametrize("name", ["equal", "dwa", "pcgrad"])
def test_one_task_trains_as_before(name: str) -> None:
    weighting = make_weighting(name, ["a"], WeightingOptions(), 0)
    for epoch in (1.0, 0.5, 0.2):
        weighting.end_epoch({"a": epoch})
    loss = torch.tensor(0.75, requires_grad=True)
    grad = [torch.tensor([0.1, -0.2])]

    assert weighting.objective({"a": loss}) is loss
    assert weighting.shared_weights({"a": loss}) == {"a": 1.0}
    assert torch.equal(weighting.combine({"a": grad}, {"a": 1.0})[0], grad[0])


def test_losses_must_match_the_tasks_and_be_scalars() -> None:
    weighting = make_weighting("equal", TASKS, OPTIONS, 0)
    with pytest.raises(ValueError, match=r"missing \['b'\], unknown \['z'\]"):
        weighting.objective({"a": torch.tensor(1.0), "z": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="scalar"):
        weighting.objective({"a": torch.ones(2), "b": torch.tensor(1.0)})


def test_fixed_uses_the_task_weights() -> None:
    weighting = make_weighting("fixed", TASKS, OPTIONS, 0)
    losses = _losses(2.0, 3.0)

    assert weighting.objective(losses).item() == 0.5 * 2.0 + 2.0 * 3.0  # 7.0
    assert weighting.shared_weights(losses) == {"a": 0.5, "b": 2.0}


def test_fixed_refuses_a_task_without_weight() -> None:
    with pytest.raises(ValueError, match=r"task-weights has no weight for task\(s\) \['d'\]"):
        make_weighting("fixed", ("a", "d"), OPTIONS, 0)


def test_default_combine_is_the_weighted_sum() -> None:
    weighting = make_weighting("fixed", TASKS, OPTIONS, 0)
    grads = {
        "a": [torch.tensor([1.0, 2.0]), torch.tensor(4.0)],
        "b": [torch.tensor([3.0, 4.0]), torch.tensor(-1.0)],
    }

    combined = weighting.combine(grads, {"a": 0.5, "b": 2.0})

    # 0.5 * (1, 2) + 2 * (3, 4) = (6.5, 9); 0.5 * 4 + 2 * -1 = 0
    assert [g.tolist() for g in combined] == [[6.5, 9.0], 0.0]


def test_combine_refuses_mismatched_gradients() -> None:
    weighting = make_weighting("equal", TASKS, OPTIONS, 0)
    ones = {"a": 1.0, "b": 1.0}
    with pytest.raises(ValueError, match="shape"):
        weighting.combine({"a": [torch.zeros(2)], "b": [torch.zeros(3)]}, ones)
    with pytest.raises(ValueError, match="length"):
        weighting.combine({"a": [torch.zeros(2)], "b": []}, ones)
    with pytest.raises(ValueError, match="finite"):
        weighting.combine({"a": [torch.zeros(2)], "b": [torch.zeros(2)]}, {"a": math.nan, "b": 1})


# ------------------------------------------------------------------- uncertainty


def test_uncertainty_objective_and_gradient_by_hand() -> None:
    weighting = make_weighting("uncertainty", TASKS, OPTIONS, 0)
    weighting.load_state(
        {
            "log-variance/a": np.array(0.0, np.float32),
            "log-variance/b": np.array(math.log(2.0), np.float32),
        }
    )
    losses = _losses(2.0, 3.0)

    objective = weighting.objective(losses)
    torch.autograd.backward(objective)
    s_a, s_b = weighting.parameters()

    # exp(-0) * 2 + 0 + exp(-ln 2) * 3 + ln 2 = 2 + 1.5 + 0.693147
    assert objective.item() == pytest.approx(4.193147, abs=1e-5)
    # d/ds = -exp(-s) L + 1: -1 * 2 + 1 = -1 and -0.5 * 3 + 1 = -0.5
    assert s_a.grad is not None and s_b.grad is not None
    assert s_a.grad.item() == pytest.approx(-1.0, abs=1e-6)
    assert s_b.grad.item() == pytest.approx(-0.5, abs=1e-6)
    assert weighting.shared_weights(losses) == pytest.approx({"a": 1.0, "b": 0.5})


def test_uncertainty_starts_at_zero_log_variance() -> None:
    weighting = make_weighting("uncertainty", TASKS, OPTIONS, 0)
    assert [p.dtype for p in weighting.parameters()] == [torch.float32, torch.float32]
    assert [p.item() for p in weighting.parameters()] == [0.0, 0.0]
    assert weighting.objective(_losses(2.0, 3.0)).item() == 5.0  # equal weighting at s = 0


def test_uncertainty_down_weights_the_noisy_task() -> None:
    # Task a's loss stays large (noise the model cannot fit), task b's is small.
    weighting = make_weighting("uncertainty", TASKS, OPTIONS, 0)
    optimizer = torch.optim.SGD(weighting.parameters(), lr=0.1)
    for _ in range(300):
        optimizer.zero_grad()
        torch.autograd.backward(weighting.objective(_losses(10.0, 1.0)))
        optimizer.step()

    s_a, s_b = (p.item() for p in weighting.parameters())
    weights = weighting.shared_weights(_losses(10.0, 1.0))

    # The optimum of exp(-s) L + s is s = ln L: ln 10 and 0.
    assert s_a == pytest.approx(math.log(10.0), abs=1e-3)
    assert s_b == pytest.approx(0.0, abs=1e-3)
    assert weights["a"] == pytest.approx(0.1, abs=1e-3)
    assert weights["a"] < weights["b"] == pytest.approx(1.0, abs=1e-3)


def test_uncertainty_state_round_trip_and_rejections() -> None:
    trained = UncertaintyWeighting(TASKS, OPTIONS, 0)
    with torch.no_grad():
        trained.log_variances["a"].fill_(0.25)
        trained.log_variances["b"].fill_(-1.5)
    state = trained.state()
    restored = UncertaintyWeighting(TASKS, OPTIONS, 0)

    restored.load_state(state)

    assert sorted(state) == ["log-variance/a", "log-variance/b"]
    assert [p.item() for p in restored.parameters()] == [0.25, -1.5]
    for bad, match in [
        ({**state, "log-variance/a": np.array(np.nan, np.float32)}, "finite"),
        ({**state, "log-variance/a": np.zeros(2, np.float32)}, "shape"),
        ({**state, "log-variance/z": np.array(0.0, np.float32)}, r"unknown \['log-variance/z'\]"),
        ({"log-variance/a": state["log-variance/a"]}, r"missing \['log-variance/b'\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            restored.load_state(bad)
    assert [p.item() for p in restored.parameters()] == [0.25, -1.5]  # unchanged by refusals


# --------------------------------------------------------------------------- dwa


def test_dwa_weights_by_hand() -> None:
    weighting = make_weighting("dwa", TASKS, OPTIONS, 0)  # temperature 2, K = 2 tasks
    assert weighting.shared_weights(_losses(1.0, 1.0)) == {"a": 1.0, "b": 1.0}

    weighting.end_epoch({"a": 1.0, "b": 0.5})
    assert weighting.shared_weights(_losses(1.0, 1.0)) == {"a": 1.0, "b": 1.0}  # one epoch

    weighting.end_epoch({"a": 2.0, "b": 2.0})
    # r = (2/1, 2/0.5) = (2, 4); w = 2 exp(r/2) / (e^1 + e^2) = (2/(1+e), 2e/(1+e))
    assert weighting.shared_weights(_losses(1.0, 1.0)) == pytest.approx(
        {"a": 0.5378828427, "b": 1.4621171573}
    )

    weighting.end_epoch({"a": 1.0, "b": 3.0})
    # r = (1/2, 3/2); w = (2/(1+e^0.5), 2e^0.5/(1+e^0.5))
    weights = weighting.shared_weights(_losses(1.0, 1.0))
    assert weights == pytest.approx({"a": 0.7550813376, "b": 1.2449186624})
    assert weighting.objective(_losses(4.0, 1.0)).item() == pytest.approx(
        0.7550813376 * 4.0 + 1.2449186624 * 1.0
    )


def test_dwa_temperature_flattens_the_weights() -> None:
    hot = make_weighting("dwa", TASKS, WeightingOptions(temperature=1000.0), 0)
    for epoch in ({"a": 1.0, "b": 0.5}, {"a": 2.0, "b": 2.0}):
        hot.end_epoch(epoch)
    assert hot.shared_weights(_losses(1.0, 1.0)) == pytest.approx({"a": 1.0, "b": 1.0}, abs=2e-3)


def test_dwa_guards_zero_and_non_finite_losses() -> None:
    weighting = make_weighting("dwa", ("a", "b", "c"), OPTIONS, 0)
    weighting.end_epoch({"a": 0.0, "b": math.nan, "c": 1.0})
    weighting.end_epoch({"a": 1.0, "b": 1.0, "c": 1.0})
    # every ratio is 1 (a: older 0, b: older non-finite, c: 1/1): equal weights
    assert weighting.shared_weights(
        {t: torch.tensor(1.0) for t in ("a", "b", "c")}
    ) == pytest.approx({"a": 1.0, "b": 1.0, "c": 1.0})
    assert all(np.isfinite(v).all() for v in weighting.state().values())


def test_dwa_history_spans_rounds_through_the_state() -> None:
    first_round = DynamicWeightAverage(TASKS, OPTIONS, 0)
    first_round.end_epoch({"a": 1.0, "b": 0.5})
    state = first_round.state()
    next_round = DynamicWeightAverage(TASKS, OPTIONS, 0)

    next_round.load_state(state)
    next_round.end_epoch({"a": 2.0, "b": 2.0})

    assert state["loss-history/a"].tolist() == [1.0]
    assert next_round.shared_weights(_losses(1.0, 1.0)) == pytest.approx(
        {"a": 0.5378828427, "b": 1.4621171573}
    )
    assert next_round.state()["loss-history/b"].tolist() == [0.5, 2.0]
    with pytest.raises(ValueError, match="0 to 2 losses"):
        next_round.load_state({"loss-history/a": np.ones(3), "loss-history/b": np.ones(3)})
    with pytest.raises(ValueError, match="same history length"):
        next_round.load_state({"loss-history/a": np.ones(1), "loss-history/b": np.ones(2)})
    with pytest.raises(ValueError, match="finite"):
        next_round.load_state({"loss-history/a": np.ones(1), "loss-history/b": np.array([np.inf])})


def test_end_epoch_needs_every_task() -> None:
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        make_weighting("dwa", TASKS, OPTIONS, 0).end_epoch({"a": 1.0})


# ------------------------------------------------------------------------ pcgrad


def test_pcgrad_projects_conflicting_gradients_by_hand() -> None:
    weighting = make_weighting("pcgrad", TASKS, OPTIONS, seed=0)
    grads = {"a": _vec(1.0, 0.0), "b": _vec(-1.0, 1.0)}

    (combined,) = weighting.combine(grads, weighting.shared_weights(_losses(1.0, 1.0)))

    # g_a . g_b = -1 < 0:
    #   g_a' = (1, 0) - (-1 / 2) (-1, 1) = (0.5, 0.5)
    #   g_b' = (-1, 1) - (-1 / 1) (1, 0) = (0, 1)
    assert weighting.needs_task_gradients
    assert combined.tolist() == pytest.approx([0.5, 1.5])


def test_pcgrad_leaves_agreeing_gradients_alone() -> None:
    weighting = make_weighting("pcgrad", TASKS, OPTIONS, seed=0)
    grads = {"a": _vec(1.0, 0.0), "b": _vec(1.0, 1.0)}  # dot 1 >= 0

    (combined,) = weighting.combine(grads, {"a": 1.0, "b": 1.0})

    assert combined.tolist() == [2.0, 1.0]


def test_pcgrad_dot_products_span_every_shared_parameter() -> None:
    # The same vectors split over two scalar parameters: one projection over the concatenation.
    weighting = make_weighting("pcgrad", TASKS, OPTIONS, seed=0)
    grads = {
        "a": [torch.tensor(1.0), torch.tensor(0.0)],
        "b": [torch.tensor(-1.0), torch.tensor(1.0)],
    }

    combined = weighting.combine(grads, {"a": 1.0, "b": 1.0})

    assert [g.shape for g in combined] == [torch.Size([]), torch.Size([])]
    assert [float(g) for g in combined] == pytest.approx([0.5, 1.5])


def test_projected_gradient_no_longer_conflicts() -> None:
    generator = torch.Generator().manual_seed(3)
    checked = 0
    for _ in range(50):
        g, other = torch.randn(2, 5, generator=generator, dtype=torch.float64)
        projected = project_conflicting(g, [other])
        if torch.dot(g, other) < 0:
            checked += 1
            assert float(torch.dot(projected, other)) == pytest.approx(0.0, abs=1e-12)
        else:
            assert torch.equal(projected, g)
        assert float(torch.dot(projected, other)) >= -1e-12
    assert checked > 10
    assert torch.equal(project_conflicting(torch.ones(2), [torch.zeros(2)]), torch.ones(2))


def test_pcgrad_order_is_seeded_and_advances() -> None:
    tasks = ("a", "b", "c")
    grads = {"a": _vec(1.0, 0.0), "b": _vec(-1.0, 1.0), "c": _vec(-1.0, -2.0)}
    ones = {t: 1.0 for t in tasks}
    rng = np.random.default_rng(7)

    def by_hand() -> list[float]:
        total = torch.zeros(2, dtype=torch.float64)
        for task in tasks:
            others = [grads[o][0] for o in tasks if o != task]
            total += project_conflicting(grads[task][0], [others[i] for i in rng.permutation(2)])
        return total.tolist()

    weighting = PCGrad(tasks, OPTIONS, seed=7)
    calls = [weighting.combine(grads, ones)[0].tolist() for _ in range(6)]

    assert calls == [pytest.approx(by_hand()) for _ in range(6)]
    assert len({tuple(c) for c in calls}) > 1  # the order (and so the result) changes


# ----------------------------------------------------------------------- cosines


def test_gradient_cosines_by_hand() -> None:
    assert gradient_cosine(_vec(1.0, 0.0), _vec(0.0, 3.0)) == 0.0
    assert gradient_cosine(_vec(1.0, 2.0), _vec(-2.0, -4.0)) == pytest.approx(-1.0)
    assert gradient_cosine(_vec(1.0, 2.0), _vec(1.0, 2.0)) == pytest.approx(1.0)
    assert gradient_cosine(_vec(1.0, 1.0), _vec(1.0, 0.0)) == pytest.approx(1 / math.sqrt(2))
    assert gradient_cosine(_vec(0.0, 0.0), _vec(1.0, 0.0)) == 0.0
    # over the concatenation: (1, 0 | 0) . (0, 1 | 1) = 0
    split_a = [torch.tensor([1.0, 0.0]), torch.tensor(0.0)]
    split_b = [torch.tensor([0.0, 1.0]), torch.tensor(1.0)]
    assert gradient_cosine(split_a, split_b) == 0.0


def test_gradient_cosine_refuses_bad_inputs() -> None:
    with pytest.raises(ValueError, match="shape"):
        gradient_cosine(_vec(1.0, 0.0), _vec(1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="finite"):
        gradient_cosine(_vec(1.0, math.nan), _vec(1.0, 0.0))


def test_task_gradient_cosines_cover_every_sorted_pair() -> None:
    grads = {"c": _vec(0.0, 1.0), "a": _vec(1.0, 0.0), "b": _vec(-1.0, 0.0)}

    cosines = task_gradient_cosines(grads)

    assert cosines == pytest.approx({("a", "b"): -1.0, ("a", "c"): 0.0, ("b", "c"): 0.0})
    assert list(cosines) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert task_gradient_cosines({"a": _vec(1.0)}) == {}


# ---------------------------------------------------------------------- registry


def test_registry_holds_the_built_in_weightings() -> None:
    assert TASK_WEIGHTINGS.names() == ["dwa", "equal", "fixed", "pcgrad", "uncertainty"]


def test_unknown_weighting_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="task-weighting") as info:
        make_weighting("uncertanty", TASKS, OPTIONS, 0)
    assert "did you mean 'uncertainty'" in str(info.value)
    assert "['dwa', 'equal', 'fixed', 'pcgrad', 'uncertainty']" in str(info.value)


class _Halved(TaskWeighting):
    """Every loss counts half."""

    def loss_weights(self) -> dict[str, float]:
        return {task: 0.5 for task in self.tasks}


def test_a_registered_weighting_is_made_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TASK_WEIGHTINGS, "_items", dict(TASK_WEIGHTINGS._items))  # undone after
    TASK_WEIGHTINGS.add("halved", _Halved)

    weighting = make_weighting("halved", TASKS, OPTIONS, 0)

    assert isinstance(weighting, _Halved)
    assert weighting.objective(_losses(2.0, 4.0)).item() == 3.0


# --------------------------------------------------- contract: every registered one


def _tiny_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 2-parameter shared layer, one 1-parameter head per task: L_t = (h_t (w . x_t) - y_t)^2."""
    shared = torch.tensor([0.5, -1.0], requires_grad=True)
    heads = torch.tensor([2.0, -0.5], requires_grad=True)
    inputs = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    return shared, heads, inputs


def _task_losses(
    shared: torch.Tensor, heads: torch.Tensor, inputs: torch.Tensor
) -> dict[str, torch.Tensor]:
    targets = (1.0, -2.0)
    return {
        task: (heads[i] * torch.dot(shared, inputs[i]) - targets[i]) ** 2
        for i, task in enumerate(TASKS)
    }


def _after_epochs(name: str) -> TaskWeighting:
    weighting = make_weighting(name, TASKS, OPTIONS, seed=1)
    for epoch in ({"a": 1.0, "b": 0.5}, {"a": 2.0, "b": 2.0}):
        weighting.end_epoch(epoch)
    with torch.no_grad():
        for i, parameter in enumerate(weighting.parameters()):
            parameter.fill_(0.3 * (i + 1))
    return weighting


@pytest.mark.parametrize("name", TASK_WEIGHTINGS.names())
def test_contract_shared_gradient_matches_the_objective(name: str) -> None:
    # d objective / d shared == combine(per-task gradients, shared_weights) when no surgery.
    weighting = _after_epochs(name)
    shared, heads, inputs = _tiny_problem()
    losses = _task_losses(shared, heads, inputs)

    objective = weighting.objective(losses)
    (direct,) = torch.autograd.grad(objective, [shared], retain_graph=True)
    per_task = {
        task: list(torch.autograd.grad(loss, [shared], retain_graph=True))
        for task, loss in losses.items()
    }
    combined = weighting.combine(per_task, weighting.shared_weights(losses))

    assert objective.dim() == 0 and torch.isfinite(objective)
    assert [g.shape for g in combined] == [shared.shape]
    if weighting.needs_task_gradients:
        assert torch.isfinite(combined[0]).all()
    else:
        assert torch.allclose(combined[0], direct, atol=1e-5)


@pytest.mark.parametrize("name", TASK_WEIGHTINGS.names())
def test_contract_state_round_trips(name: str) -> None:
    weighting = _after_epochs(name)
    state = weighting.state()
    fresh = make_weighting(name, TASKS, OPTIONS, seed=1)

    fresh.load_state(state)

    assert _same(fresh.state(), state)
    assert fresh.shared_weights(_losses(1.0, 1.0)) == pytest.approx(
        weighting.shared_weights(_losses(1.0, 1.0))
    )
    with pytest.raises(ValueError, match="unknown"):
        fresh.load_state({**state, "not-a-key": np.zeros(1)})


def _same(left: Mapping[str, np.ndarray], right: Mapping[str, np.ndarray]) -> bool:
    return sorted(left) == sorted(right) and all(np.array_equal(left[k], right[k]) for k in left)
