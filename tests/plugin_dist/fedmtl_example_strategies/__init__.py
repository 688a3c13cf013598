"""An example third-party strategy package, found through the ``fedmtl.strategies`` entry point.

It stands for a package installed next to fedmtl whose ``pyproject.toml`` says::

    [project.entry-points."fedmtl.strategies"]
    example-server-lr = "fedmtl_example_strategies:ServerLrFedAvg"

The tests put ``tests/plugin_dist`` on ``sys.path``, where the matching
``fedmtl_example_strategies-0.1.0.dist-info`` folder makes it look installed.
Nothing imports this module by hand: the strategy registry does, on first use.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

__all__ = ["ServerLrFedAvg"]


class ServerLrFedAvg(FedAvg):
    """FedAvg with a server learning rate.

    The new global model is ``current + server_lr * (average - current)``:
    ``server_lr = 1`` is plain FedAvg, smaller values damp each round's update.

    The signature is explicit (no ``**kwargs``) so that fedmtl can check the
    experiment's ``strategy-options`` by name and suggest the right one on a
    typo; fedmtl passes the sampling arguments listed here.

    Parameters
    ----------
    server_lr : float
        Server learning rate, in ``(0, 1]`` (default 1.0).
    fraction_train, fraction_evaluate, min_train_nodes, min_evaluate_nodes, \
    min_available_nodes
        Node sampling, as in :class:`flwr.serverapp.strategy.FedAvg`.
    """

    def __init__(
        self,
        server_lr: float = 1.0,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
    ) -> None:
        if not 0.0 < server_lr <= 1.0:
            raise ValueError(f"server_lr must be in (0, 1], got {server_lr}")
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
        )
        self.server_lr = server_lr
        self._current: ArrayRecord | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global model sent this round, then configure as FedAvg."""
        self._current = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average as FedAvg, then step ``server_lr`` of the way from the global model."""
        averaged, metrics = super().aggregate_train(server_round, replies)
        if averaged is None or self._current is None or self.server_lr == 1.0:
            return averaged, metrics
        stepped = OrderedDict(
            (key, Array(old.numpy() + self.server_lr * (averaged[key].numpy() - old.numpy())))
            for key, old in self._current.items()
        )
        return ArrayRecord(stepped), metrics
