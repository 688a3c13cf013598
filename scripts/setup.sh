#!/usr/bin/env bash
# Create .venv (if missing) and install fedmtl into it. Sourced by the other scripts.
# FEDMTL_TORCH picks the torch build (default: the 2.13.0 CPU build pip finds here).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FEDMTL_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
if ! python -c "import torch" 2>/dev/null; then
  pip install -q --disable-pip-version-check "${FEDMTL_TORCH:-torch==2.13.0}"
fi
# Reinstall only when pyproject.toml or the extras changed since the last install.
STAMP="$VENV/.fedmtl-install-stamp"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)${FEDMTL_EXTRAS:-}"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  pip install -q --disable-pip-version-check -e "$ROOT${FEDMTL_EXTRAS:-}"
  echo "$WANT" > "$STAMP"
fi
