#!/usr/bin/env bash
# Install fedmtl (first time only) and run the default experiment on Flower + Ray.
# Extra arguments go to `fedmtl simulate`, e.g. scripts/simulate.sh --set strategy=fedadam
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec fedmtl simulate simulations/digits.toml "$@"
