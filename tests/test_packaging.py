"""A non-editable install (a built wheel) carries what a run needs, without the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip_wheel, "--wheel-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [built] = out.glob("fedmtl-*.whl")
    return built


def test_wheel_ships_every_experiment_and_the_pretrained_weights(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.name for p in (ROOT / "fedmtl" / "experiments").glob("*.toml"))
    assert len(shipped) >= 3
    for name in shipped:
        assert f"fedmtl/experiments/{name}" in names
    assert "fedmtl/pretrained/digits-cnn.pt" in names
    assert not any(n.startswith("tests/") for n in names)


def test_installed_fedmtl_finds_its_experiments_from_any_directory(
    wheel: Path, tmp_path: Path
) -> None:
    # Prepare: unpack the wheel where nothing else of the clone is, run from an empty directory
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import fedmtl.config as c; from fedmtl.assembly import load_run; "
        "print(c.resolve_experiment_path('text_minilm')); print(load_run('digits').num_rounds)"
    )

    # Execute
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    )

    # Assert: the files come from the unpacked install, not from the clone
    path, rounds = result.stdout.split()
    assert Path(path).is_relative_to(site), path
    assert int(rounds) >= 1
