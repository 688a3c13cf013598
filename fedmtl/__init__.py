"""fedmtl: federated multi-task learning on a shared pretrained backbone.

Clients hold different tasks and fine-tune task heads locally; a Flower server
strategy aggregates only the shared layers. See ``ARCHITECTURE`` in the README.

The Python API (:mod:`fedmtl.api`): ``fedmtl.run``, ``fedmtl.load``,
``fedmtl.sweep``, ``fedmtl.load_sweep``. Importing ``fedmtl`` stays light: the
API (and torch, Ray, Flower) is imported on first use.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedmtl.api import RunResult as RunResult
    from fedmtl.api import SweepResult as SweepResult
    from fedmtl.api import load as load
    from fedmtl.api import load_sweep as load_sweep
    from fedmtl.api import run as run
    from fedmtl.api import sweep as sweep

__version__ = "0.1.0"

_API = ("RunResult", "SweepResult", "load", "load_sweep", "run", "sweep")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """The API's names, imported on first use."""
    if name in _API:
        from fedmtl import api

        return getattr(api, name)
    raise AttributeError(f"module 'fedmtl' has no attribute {name!r}")
