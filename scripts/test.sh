#!/usr/bin/env bash
# Install fedmtl with its dev tools, then lint, type-check, check import layers and test.
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export FEDMTL_EXTRAS="dev,text,lora,vision,dp,dpsgd,tracking,api"
# shellcheck disable=SC1091
. "$ROOT/scripts/setup.sh"
cd "$ROOT"
ruff check fedmtl strategies tests
ruff format --check fedmtl strategies tests
mypy
lint-imports
python -m pytest -q -p no:cacheprovider "$@"
