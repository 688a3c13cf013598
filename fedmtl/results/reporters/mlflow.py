"""MLflow, offline: one MLflow run per fedmtl run, in ``<run dir>/mlflow/mlflow.db``.

The tracking store is a sqlite file inside the run directory (no server, no
network; ``MLFLOW_TRACKING_URI`` is not read): look at it with
``mlflow ui --backend-store-uri sqlite:///runs/<run>/mlflow/mlflow.db``, or
read it with ``mlflow.tracking.MlflowClient``. The MLflow experiment is the
run's ``name``, the MLflow run is named after the run directory and holds the
resolved config as parameters, each round's
:func:`~fedmtl.results.reporters.round_scalars` as metrics at step = round, and
the run's status and outcome at the end.

MLflow metrics are append-only. A resumed run reopens the same MLflow run and
skips the rounds it had already logged (the rounds after the checkpoint that
the killed run reached): a fedmtl resume redoes them exactly, so no round
appears twice.

Needs ``mlflow-skinny`` (``pip install "fedmtl[tracking]"``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from fedmtl.config import ExperimentConfig
from fedmtl.results.reporters import round_scalars
from fedmtl.results.round_record import RoundRecord
from fedmtl.results.run_directory import RunDirectory

#: The folder of a run directory holding the MLflow store.
MLFLOW_DIR = "mlflow"
MLFLOW_DB = "mlflow.db"
#: The tag that names the fedmtl run directory of an MLflow run.
RUN_DIR_TAG = "fedmtl.run-dir"
#: A metric logged every round (its value is the round): what a resumed run reads back.
ROUND_METRIC = "round"
_BATCH = 100  # MLflow's limit of parameters (and of metric batches we send) per request
_PARAM_LENGTH = 6000


def tracking_uri(run: RunDirectory) -> str:
    """The sqlite tracking URI of ``run``'s MLflow store."""
    return f"sqlite:///{(run.path / MLFLOW_DIR / MLFLOW_DB).resolve()}"


def _params(cfg: ExperimentConfig) -> list[Param]:
    out = []
    for key, value in sorted(cfg.to_dict().items()):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        out.append(Param(key, text[:_PARAM_LENGTH]))
    return out


class MlflowReporter:
    """Mirror every round to an MLflow run stored under the run directory."""

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.run_id = ""
        self.logged: set[int] = set()

    def start(self, cfg: ExperimentConfig, run: RunDirectory, first_round: int) -> None:
        """Open (or, resumed, reopen) the MLflow run of ``run``."""
        folder = run.path / MLFLOW_DIR
        folder.mkdir(exist_ok=True)
        client = MlflowClient(tracking_uri=tracking_uri(run))
        experiment = client.get_experiment_by_name(cfg.name)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else client.create_experiment(
                cfg.name, artifact_location=(folder / "artifacts").resolve().as_uri()
            )
        )
        found = [  # the MLflow run of this run directory: a resumed run reopens it
            r
            for r in client.search_runs([experiment_id])
            if r.data.tags.get(RUN_DIR_TAG) == run.path.name
        ]
        if found:
            self.run_id = found[0].info.run_id
            history = client.get_metric_history(self.run_id, ROUND_METRIC)
            self.logged = {m.step for m in history}
            client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        else:
            created = client.create_run(
                experiment_id, run_name=run.path.name, tags={RUN_DIR_TAG: run.path.name}
            )
            self.run_id = created.info.run_id
            params = _params(cfg)
            for i in range(0, len(params), _BATCH):
                client.log_batch(self.run_id, params=params[i : i + _BATCH])
        self.client = client

    def round(self, record: RoundRecord) -> None:
        """Log the round's scalars at step = round (skipped if this MLflow run has it)."""
        if self.client is None:
            raise RuntimeError("MlflowReporter.round before start")
        if record.round in self.logged:
            return
        stamp = int(time.time() * 1000)
        scalars = {**round_scalars(record), ROUND_METRIC: float(record.round)}
        metrics = [Metric(key, value, stamp, record.round) for key, value in scalars.items()]
        # The round marker goes last: a round counts as logged once all of it is.
        for i in range(0, len(metrics), _BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + _BATCH])
        self.logged.add(record.round)

    def close(self, summary: Mapping[str, Any] | None) -> None:
        """End the MLflow run: FINISHED, or FAILED when the run failed or stopped early."""
        if self.client is None:
            return
        failed = summary is None or summary.get("status") == "failed"
        if summary is not None:
            self.client.set_tag(self.run_id, "fedmtl.status", str(summary.get("status", "")))
        status = RunStatus.FAILED if failed else RunStatus.FINISHED
        self.client.set_terminated(self.run_id, status=RunStatus.to_string(status))
        self.client = None
