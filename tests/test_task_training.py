"""Tests for :mod:`fedmtl.task_training` (every task a client holds, trained in one step)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from fedmtl.models import MultiTaskModel, build_model
from fedmtl.models.backbones import Backbone
from fedmtl.task_kinds import TASK_KINDS, TaskObjective
from fedmtl.task_training import TaskInputs, train_tasks
from fedmtl.task_weighting import TaskWeighting, WeightingOptions, make_weighting
from fedmtl.training import TrainSettings, batch_order, train_local

TASKS = {"digit": 10, "parity": 2}


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)


class _Linear(Backbone):
    """A 2-input, 2-feature linear backbone: gradients small enough to check by hand."""

    feature_dim = 2
    input_kind = "vector"

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(2, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # type: ignore[no-any-return]


def _body(model: MultiTaskModel) -> nn.Linear:
    body = model.backbone.body
    assert isinstance(body, nn.Linear)
    return body


def _head(model: MultiTaskModel, task: str) -> nn.Linear:
    head = model.heads[task]
    assert isinstance(head, nn.Linear)
    return head


def _tiny() -> MultiTaskModel:
    torch.manual_seed(0)
    heads = {"a": nn.Linear(2, 1, bias=False), "b": nn.Linear(2, 1, bias=False)}
    return MultiTaskModel(_Linear(), heads)


REGRESSION = TaskObjective(TASK_KINDS.get("regression"))


def _digits(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
    return x, rng.integers(0, 10, size=n)


def _all(model: MultiTaskModel) -> set[str]:
    return {name for name, _ in model.named_parameters()}


def test_one_task_with_equal_weighting_is_train_local_bit_for_bit() -> None:
    x, y = _digits()
    settings = TrainSettings(epochs=2, batch_size=8, seed=3)
    plain = build_model("digits-cnn", TASKS, pretrained="none", seed=1)
    joint = copy.deepcopy(plain)
    expected = train_local(plain, "digit", x, y, settings, _all(plain))
    weighting = make_weighting("equal", ["digit"], WeightingOptions(), seed=0)
    result = train_tasks(joint, [TaskInputs("digit", x, y)], settings, _all(joint), weighting)
    assert result.tasks["digit"] == expected
    for (name, a), (_, b) in zip(
        plain.state_dict().items(), joint.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_two_tasks_train_on_the_mean_of_their_losses_in_one_step() -> None:
    """Joint training equals a hand-written loop: same batches, (loss_a + loss_b) / 2, one step."""
    x, y = _digits()
    parity = y % 2
    settings = TrainSettings(epochs=1, batch_size=8, seed=5, momentum=0.0)
    model = build_model("digits-cnn", TASKS, pretrained="none", seed=2)
    reference = copy.deepcopy(model)
    parts = [TaskInputs("digit", x, y), TaskInputs("parity", x, parity)]
    result = train_tasks(model, parts, settings, _all(model))

    reference.train()
    optimizer = torch.optim.SGD(reference.parameters(), lr=settings.learning_rate)
    generator = torch.Generator().manual_seed(settings.seed)
    losses = {"digit": 0.0, "parity": 0.0}
    for batch in batch_order(len(y), settings.batch_size, generator):
        optimizer.zero_grad()
        features = reference.backbone(torch.as_tensor(x[batch.numpy()]))
        la = nn.functional.cross_entropy(
            reference.heads["digit"](features), torch.as_tensor(y)[batch]
        )
        lb = nn.functional.cross_entropy(
            reference.heads["parity"](features), torch.as_tensor(parity)[batch]
        )
        torch.autograd.backward((la + lb) / 2)
        optimizer.step()
        losses["digit"] += float(la.detach()) * len(batch)
        losses["parity"] += float(lb.detach()) * len(batch)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-5), name
    assert result.tasks["digit"]["loss"] == pytest.approx(losses["digit"] / len(y), rel=1e-5)
    assert result.tasks["parity"]["num-examples"] == len(y)
    assert set(result.cosines) == {("digit", "parity")}
    assert -1.0 <= result.cosines[("digit", "parity")] <= 1.0


def test_tasks_sharing_inputs_share_one_backbone_pass_per_step() -> None:
    x, y = _digits(16)
    model = build_model("digits-cnn", TASKS, pretrained="none", seed=2)
    calls = []
    model.backbone.register_forward_hook(lambda *_: calls.append(1))
    parts = [TaskInputs("digit", x, y), TaskInputs("parity", x.copy(), y % 2)]
    train_tasks(model, parts, TrainSettings(epochs=1, batch_size=8), _all(model))
    assert len(calls) == 2  # two steps, one pass each (not one per task)


def _cosine_data(
    x: tuple[float, float] = (1.0, 0.0), head_b: tuple[float, float] = (0.0, 1.0)
) -> tuple[list[TaskInputs], MultiTaskModel]:
    """One example, body = identity, head a = (1, 0); each target 2 below its output."""
    model = _tiny()
    with torch.no_grad():
        _body(model).weight.copy_(torch.eye(2))
        _head(model, "a").weight.copy_(torch.tensor([[1.0, 0.0]]))
        _head(model, "b").weight.copy_(torch.tensor([head_b]))
    inputs = np.array([x], dtype=np.float32)
    out_a, out_b = x[0], head_b[0] * x[0] + head_b[1] * x[1]
    parts = [
        TaskInputs("a", inputs, np.array([out_a - 2.0]), REGRESSION),
        TaskInputs("b", inputs, np.array([out_b - 2.0]), REGRESSION),
    ]
    return parts, model


@pytest.mark.parametrize(
    ("head_b", "expected"),
    [((0.0, 1.0), 0.0), ((-1.0, 0.0), -1.0), ((2.0, 0.0), 1.0)],
)
def test_gradient_cosines_by_hand(head_b: tuple[float, float], expected: float) -> None:
    """Loss_t = huber(w_t . W x - y_t): dLoss_t/dW = huber'(r_t) w_t x^T, and both residuals
    are +2 (huber' = 1), so the gradients' cosine is cos(w_a, w_b) * cos(x, x) = cos(w_a, w_b)."""
    parts, model = _cosine_data((1.0, 1.0), head_b)
    settings = TrainSettings(epochs=1, batch_size=4, learning_rate=1e-6, momentum=0.0)
    result = train_tasks(model, parts, settings, _all(model))
    assert result.cosines[("a", "b")] == pytest.approx(expected, abs=1e-6)


def test_no_shared_parameters_no_cosines_heads_still_train() -> None:
    parts, model = _cosine_data()
    heads = {n for n in _all(model) if n.startswith("heads.")}
    before = copy.deepcopy(model.state_dict())
    result = train_tasks(model, parts, TrainSettings(epochs=1, momentum=0.0), heads)
    assert result.cosines == {}
    after = model.state_dict()
    assert torch.equal(after["backbone.body.weight"], before["backbone.body.weight"])
    assert not torch.equal(after["heads.a.weight"], before["heads.a.weight"])


def test_weighting_scales_the_shared_gradient_by_hand() -> None:
    """fixed weights (3, 0) over 2 tasks: the body moves 3 / 2 * lr * dLoss_a/dW, b not at all."""
    parts, model = _cosine_data()
    body = {"backbone.body.weight"}
    weighting = make_weighting(
        "fixed", ["a", "b"], WeightingOptions(weights={"a": 3.0, "b": 0.0}), 0
    )
    lr = 0.1
    settings = TrainSettings(epochs=1, batch_size=1, learning_rate=lr, momentum=0.0)
    start = _body(model).weight.detach().clone()
    train_tasks(model, parts, settings, body, weighting)
    # out_a = 1, target -1: slope huber'(2) (delta 1: 1); dLoss_a/dW = w_a x^T = [[1, 0], [0, 0]].
    objective = parts[0].objective
    out = torch.tensor([[1.0]], requires_grad=True)
    torch.autograd.backward(objective.kind.loss(out, objective.targets(np.array([-1.0])), "mean"))
    slope = float(out.grad[0, 0])  # type: ignore[index]
    expected = start - 3 / 2 * lr * slope * torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert torch.allclose(_body(model).weight.detach(), expected, atol=1e-6)


def test_uneven_tasks_cycle_the_smaller_one_and_count_their_own_examples() -> None:
    x, y = _digits(40)
    model = build_model("digits-cnn", TASKS, pretrained="none", seed=2)
    parts = [TaskInputs("digit", x, y), TaskInputs("parity", x[:10], y[:10] % 2)]
    result = train_tasks(model, parts, TrainSettings(epochs=1, batch_size=8), _all(model))
    assert result.tasks["digit"]["num-examples"] == 40
    assert result.tasks["parity"]["num-examples"] == 10
    assert result.num_examples == 50
    assert np.isfinite(result.loss)


def test_distinct_tasks_required() -> None:
    x, y = _digits(8)
    model = build_model("digits-cnn", TASKS, pretrained="none")
    with pytest.raises(ValueError, match="distinct"):
        train_tasks(model, [TaskInputs("digit", x, y)] * 2, TrainSettings(), _all(model))
    assert isinstance(make_weighting("equal", ["a"], WeightingOptions(), 0), TaskWeighting)


def test_a_backbone_entry_in_the_task_scope_is_refused_with_several_tasks_per_client() -> None:
    from fedmtl.config import ConfigError, build_config
    from fedmtl.run_model import check_task_scope

    several = build_config({"tasks-per-client": 2, "scope-task": ["heads.*", "backbone.proj.*"]})
    with pytest.raises(ConfigError) as info:
        check_task_scope(several)
    assert info.value.key == "scope-task"
    assert "backbone.proj" in str(info.value)
    check_task_scope(build_config({"tasks-per-client": 2, "scope-task": ["heads.*"]}))
    check_task_scope(build_config({"scope-task": ["heads.*", "backbone.proj.*"]}))  # one task each
