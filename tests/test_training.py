"""Tests for :mod:`fedmtl.training` (plain-torch local training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedmtl.config import CHOICES
from fedmtl.data.federation import ClientData, PartitionSpec, client_data
from fedmtl.models import MultiTaskModel, build_model
from fedmtl.models.state import export_arrays, import_arrays
from fedmtl.registry import RegistryError
from fedmtl.training import (
    OPTIMIZERS,
    TrainSettings,
    client_seed,
    evaluate,
    gradient_steps,
    pick_device,
    train_local,
)

TASKS = {"digit": 10, "parity": 2, "ge5": 2}
SPEC = PartitionSpec(dataset="digits", tasks=tuple(TASKS), num_clients=6, partitioner="iid")


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data() -> ClientData:
    return client_data(SPEC, 0)  # a "digit" client


def _model(seed: int = 0) -> MultiTaskModel:
    return build_model("digits-cnn", TASKS, pretrained="none", seed=seed)


def _parameters(model: MultiTaskModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _all_trainable(model: MultiTaskModel) -> set[str]:
    return {k for k, _ in model.named_parameters()}


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(sum(((a[k] - b[k]) ** 2).sum() for k in a))


def test_local_training_lowers_loss(data: ClientData) -> None:
    # Prepare
    model = _model()
    before = evaluate(model, data.task, data.x_train, data.y_train)
    settings = TrainSettings(epochs=3, batch_size=16, learning_rate=0.05, seed=1)

    # Execute
    result = train_local(
        model, data.task, data.x_train, data.y_train, settings, _all_trainable(model)
    )
    after = evaluate(model, data.task, data.x_train, data.y_train)

    # Assert
    assert data.task == "digit"
    assert result["num-examples"] == data.num_train
    assert np.isfinite(result["loss"])
    assert after["loss"] < 0.7 * before["loss"]
    assert after["accuracy"] > before["accuracy"]


def test_parameters_outside_trainable_do_not_change(data: ClientData) -> None:
    # Prepare
    model = _model()
    start = _parameters(model)
    trainable = {k for k in start if k.startswith("heads.digit.")}
    settings = TrainSettings(epochs=2, seed=0)

    # Execute
    train_local(model, data.task, data.x_train, data.y_train, settings, trainable)
    end = _parameters(model)

    # Assert
    for name in start:
        changed = not torch.equal(start[name], end[name])
        assert changed is (name in trainable), name


def test_proximal_term_keeps_weights_closer_to_reference(data: ClientData) -> None:
    # Prepare
    reference = {k: v.detach().clone() for k, v in _model().state_dict().items()}
    distances = {}

    # Execute
    for mu in (0.0, 1.0):
        model = _model()
        settings = TrainSettings(epochs=2, learning_rate=0.05, proximal_mu=mu, seed=7)
        train_local(
            model,
            data.task,
            data.x_train,
            data.y_train,
            settings,
            _all_trainable(model),
            proximal_reference=reference,
        )
        params = _parameters(model)
        distances[mu] = _distance(params, {k: reference[k] for k in params})

    # Assert
    assert distances[0.0] > 0
    assert distances[1.0] < 0.8 * distances[0.0]


def test_same_seed_gives_identical_weights_and_other_seed_differs(data: ClientData) -> None:
    # Prepare
    def run(seed: int) -> dict[str, torch.Tensor]:
        model = _model()
        settings = TrainSettings(epochs=1, seed=seed)
        train_local(model, data.task, data.x_train, data.y_train, settings, _all_trainable(model))
        return {k: v.clone() for k, v in model.state_dict().items()}

    # Execute
    first, second, other = run(3), run(3), run(4)

    # Assert
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_build_model_is_deterministic_and_heads_ignore_other_tasks() -> None:
    a = _model(seed=5).state_dict()
    b = _model(seed=5).state_dict()
    only_digit = build_model("digits-cnn", {"digit": 10}, seed=5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(a["heads.digit.weight"], only_digit["heads.digit.weight"])
    assert not torch.equal(a["heads.parity.weight"], a["heads.ge5.weight"])


def test_zero_epochs_changes_nothing(data: ClientData) -> None:
    model = _model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_local(
        model, data.task, data.x_train, data.y_train, TrainSettings(epochs=0), _all_trainable(model)
    )
    assert result == {"loss": 0.0, "num-examples": data.num_train}
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())


def test_adam_optimizer_trains(data: ClientData) -> None:
    model = _model()
    before = evaluate(model, data.task, data.x_train, data.y_train)["loss"]
    train_local(
        model,
        data.task,
        data.x_train,
        data.y_train,
        TrainSettings(epochs=2, optimizer="adam", learning_rate=0.005),
        _all_trainable(model),
    )
    assert evaluate(model, data.task, data.x_train, data.y_train)["loss"] < before


def test_evaluate_counts_correct_predictions_by_hand(data: ClientData) -> None:
    # Prepare
    model = _model()
    model.eval()
    x, y = data.x_test, data.y_test
    with torch.no_grad():
        logits = model(torch.from_numpy(x), "digit")
    expected_acc = float((logits.argmax(1).numpy() == y).mean())
    expected_loss = float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)))

    # Execute
    result = evaluate(model, "digit", x, y, batch_size=7)

    # Assert
    assert result["num-examples"] == len(y)
    assert result["accuracy"] == pytest.approx(expected_acc)
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_export_import_round_trip_and_checks() -> None:
    source, target = _model(seed=1), _model(seed=2)
    keys = ["backbone.conv1.weight", "backbone.bn1.num_batches_tracked"]
    arrays = export_arrays(source, keys)
    import_arrays(target, arrays)
    assert torch.equal(target.state_dict()[keys[0]], source.state_dict()[keys[0]])
    with pytest.raises(ValueError, match="does not have"):
        import_arrays(target, {"nope": np.zeros(1, np.float32)})
    with pytest.raises(ValueError, match="shape"):
        import_arrays(target, {keys[0]: np.zeros((1,), np.float32)})


def test_pick_device_cpu() -> None:
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert pick_device("auto").type == "cpu"
        with pytest.raises(RuntimeError, match="no CUDA device"):
            pick_device("cuda")


def test_optimizers_are_a_registry_with_the_configs_choices(data: ClientData) -> None:
    # Prepare
    model = _model()
    params = list(model.parameters())
    # Execute
    sgd = OPTIMIZERS.get("sgd")(params, TrainSettings(learning_rate=0.1, momentum=0.5))
    adam = OPTIMIZERS.get("adam")(params, TrainSettings(learning_rate=0.01, weight_decay=0.1))
    # Assert
    assert set(OPTIMIZERS) == set(CHOICES["optimizer"]) == {"sgd", "adam"}
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.5
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["weight_decay"] == 0.1
    with pytest.raises(RegistryError, match="did you mean 'adam'"):
        train_local(
            model, data.task, data.x_train, data.y_train, TrainSettings(optimizer="adamw"),
            _all_trainable(model),
        )  # fmt: skip


def test_gradient_steps_take_one_step_per_batch_and_report_the_data_loss() -> None:
    # Prepare: minimise (w - 3)^2 with a penalty w^2 that is not reported
    w = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([w], lr=0.1)
    batches = [torch.ones(2), torch.ones(3)]

    def loss(batch: torch.Tensor) -> tuple[torch.Tensor, int]:
        return ((w - 3) ** 2) * batch.mean(), len(batch)

    # Execute
    seen = gradient_steps(optimizer, batches, loss, penalty=lambda: w**2)
    # Assert: w <- w - 0.1 * (2 (w - 3) + 2 w), twice
    assert [size for _, size in seen] == [2, 3]
    assert seen[0][0] == pytest.approx(9.0)
    assert float(w.detach()) == pytest.approx(0.6 - 0.1 * (2 * (0.6 - 3) + 2 * 0.6))


def test_client_seeds_differ_per_run_round_and_client() -> None:
    seeds = {client_seed(s, r, c) for s in range(3) for r in range(1, 4) for c in range(50)}
    assert len(seeds) == 3 * 3 * 50
    assert client_seed(0, 1, 2) == 1009 + 2  # the formula every run so far used
