"""Conformance kit: test that a strategy behaves inside fedmtl's ``ScopedStrategy``.

It runs under pytest: install it with the ``conformance`` extra
(``pip install 'fedmtl[conformance]'``; ``dev`` includes it). A strategy author
writes one test module::

    # tests/test_my_strategy.py
    from flwr.serverapp.strategy import FedAvg
    from strategies.testing import StrategyConformance

    class MyStrategy(FedAvg):
        conformance_traits = ("weighted-mean",)  # enables the sample-weight check

    class TestMyStrategy(StrategyConformance):
        strategy = "tests.test_my_strategy:MyStrategy"  # or a registered name
        options = {"fraction-train": 1.0}  # its strategy-options, if any

``options`` are the strategy's constructor options, as an experiment's
``strategy-options``. ``conformance_traits`` (a class attribute of the strategy,
or ``traits = (...)`` on the test class) say which checks apply: a
``"weighted-mean"`` strategy must weigh replies by ``num-examples``, and one
without that trait skips the sample-weight check; ``"robust"``,
``"server-optimizer"``, ``"task-aware"`` and ``"no-aggregation"`` say why a
strategy is not a weighted mean (:data:`BUILTIN_TRAITS` gives Flower's their traits).

Each check is also a plain function (``CHECKS[name](strategy, options)``) that
raises ``AssertionError`` on a violation; :mod:`strategies.testing.fakes` holds
the fake replies and Grid they use, :mod:`strategies.testing.traits` the traits.
"""

import importlib.util

if importlib.util.find_spec("pytest") is None:  # pragma: no cover - depends on the install
    raise ImportError(
        "strategies.testing (the conformance kit) runs under pytest, which is not installed: "
        "pip install 'fedmtl[conformance]'"
    )

from strategies.testing.conformance import (
    CHECKS,
    StrategyConformance,
    check_bad_replies_rejected,
    check_deterministic,
    check_identical_replies_keep_weights,
    check_sample_weights_respected,
    check_several_task_clients,
    check_state_survives_checkpoint,
    check_task_groups_separate,
    check_task_scope_robust,
)
from strategies.testing.fakes import (
    FakeGrid,
    error_reply,
    multitask_train_reply,
    server_identity,
    train_reply,
)
from strategies.testing.traits import BUILTIN_TRAITS, traits_of

__all__ = [
    "BUILTIN_TRAITS",
    "CHECKS",
    "FakeGrid",
    "StrategyConformance",
    "check_bad_replies_rejected",
    "check_deterministic",
    "check_identical_replies_keep_weights",
    "check_sample_weights_respected",
    "check_several_task_clients",
    "check_state_survives_checkpoint",
    "check_task_groups_separate",
    "check_task_scope_robust",
    "error_reply",
    "multitask_train_reply",
    "server_identity",
    "train_reply",
    "traits_of",
]
