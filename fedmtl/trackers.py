"""The experiment trackers a run can mirror its rounds to: names, packages, where the code is.

The ``trackers`` key names entries of :data:`TRACKERS`. An entry says which
packages the tracker needs, which optional extra installs them, and where its
reporter class is (``"module:attribute"``). Nothing of a tracker is imported
here: config validation only asks whether the packages are installed
(:func:`importlib.util.find_spec`), and the run imports the reporter
(:mod:`fedmtl.results.reporters`) only for the trackers it names.

A plug-in registers its own tracker in one line::

    TRACKERS.add("mine", TrackerSpec("my_package.reporting:MyReporter", packages=("my_package",)))

Its class takes no arguments and has the methods of
:class:`fedmtl.results.reporters.Reporter`.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from fedmtl.registry import Registry

#: The optional extra that installs the built-in trackers' packages.
TRACKING_EXTRA = "tracking"


class TrackerUnavailableError(ImportError):
    """A tracker's packages are not installed; the message names the extra to install."""


@dataclass(frozen=True)
class TrackerSpec:
    """Where a tracker's reporter lives and what it needs.

    Attributes
    ----------
    factory : str
        ``"package.module:ClassName"``, imported only when a run uses the tracker.
    packages : tuple of str
        Import names that must be installed (``"tensorboard"``, ``"mlflow"``).
    install : str
        What to install when they are missing (shown in the error).
    description : str
        One line for listings.
    """

    factory: str
    packages: tuple[str, ...] = ()
    install: str = f'pip install "fedmtl[{TRACKING_EXTRA}]"'
    description: str = ""

    def missing(self) -> list[str]:
        """The packages of :attr:`packages` that are not installed (nothing is imported)."""
        return [name for name in self.packages if importlib.util.find_spec(name) is None]

    def require(self, name: str) -> None:
        """Raise :class:`TrackerUnavailableError` when a package is missing."""
        missing = self.missing()
        if missing:
            raise TrackerUnavailableError(
                f"tracker '{name}' needs {missing}, not installed: {self.install} "
                f"(the '{TRACKING_EXTRA}' extra)"
            )

    def load(self) -> object:
        """Import and return the reporter class named by :attr:`factory`."""
        module, _, attribute = self.factory.partition(":")
        if not module or not attribute:
            raise ValueError(f"a tracker factory is 'module:attribute', got {self.factory!r}")
        return getattr(importlib.import_module(module), attribute)


TRACKERS: Registry[TrackerSpec] = Registry("tracker")
TRACKERS.add(
    "tensorboard",
    TrackerSpec(
        "fedmtl.results.reporters.tensorboard:TensorBoardReporter",
        packages=("tensorboard",),
        description="event files in <run>/tensorboard/ (torch's SummaryWriter)",
    ),
)
TRACKERS.add(
    "mlflow",
    TrackerSpec(
        "fedmtl.results.reporters.mlflow:MlflowReporter",
        packages=("mlflow",),
        description="an MLflow run in <run>/mlflow/mlflow.db (sqlite, no server)",
    ),
)
