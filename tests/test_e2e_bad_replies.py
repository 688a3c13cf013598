"""Malformed replies and a crashing client on Ray: rejected, logged, and the run finishes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmtl.results import read_metrics
from fedmtl.simulation import simulate
from tests.e2e_helpers import saboteur, small

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("strategy", ["fedavg", "fedmedian"])
def test_bad_replies_are_rejected_and_the_run_finishes(tmp_path: Path, strategy: str) -> None:
    # Prepare
    cfg = small(tmp_path, **{"num-clients": 6, "strategy": strategy})
    # Execute
    run_dir = simulate(cfg, client_mods=[saboteur])
    # Assert: every round: 3 rejections with their reasons, 1 failure, 2 clients averaged
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["round"] for r in records] == [0, 1, 2]
    for record in records[1:]:
        reasons = {row["client-id"]: row["reason"] for row in record["rejected"]}
        assert "non-finite" in reasons[0]
        assert "expected float32" in reasons[1]
        assert "keys differ" in reasons[2]
        assert len(record["failures"]) == 1 and not record["skipped"]
        assert {row["client-id"] for row in record["train"]["clients"]} == {4, 5}
    shared = np.load(run_dir / "final" / "shared.npz")
    assert all(np.isfinite(shared[k]).all() for k in shared.files)
    assert all(0.0 <= c["accuracy"] <= 1.0 for c in records[-1]["evaluate"]["clients"])
