#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install what is missing: torch and torchvision (pinned here, the one
# place versions are pinned; override with TORCH_SPEC / TORCHVISION_SPEC), then this package (editable), with the
# extras named (dev: everything the tests use). An environment that already imports torch keeps its own build.
# Usage: scripts/setup_venv.sh [VENV_DIR [EXTRAS]]     (default .venv, no extras)
set -euo pipefail
VENV=${1:-.venv}
EXTRAS=${2:-}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1}
TORCHVISION_SPEC=${TORCHVISION_SPEC:-torchvision==0.29.1}
cd "$(dirname "$0")/.."
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
    echo "installing $TORCH_SPEC $TORCHVISION_SPEC into $VENV"
    "$PY" -m pip install -q "$TORCH_SPEC" "$TORCHVISION_SPEC" 2>&1 | grep -v "^WARNING: Location" || true
    "$PY" -c "import torch, torchvision" || { echo "error: torch did not install into $VENV" >&2; exit 1; }
fi
spec="."
[ -n "$EXTRAS" ] && spec=".[$EXTRAS]"
stamp="$VENV/.dml_csr-installed${EXTRAS:+-$EXTRAS}"
here=$(pwd)
# installed from this checkout (a stamp left by another clone does not count), and not older than pyproject.toml
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$(cat "$stamp")" != "$here" ]; then
    echo "installing dml_csr$spec (editable) into $VENV"
    "$PY" -m pip install -q -e "$spec" 2>&1 | grep -v "^WARNING: Location" || true
    "$PY" -c "import dml_csr, cv2, yaml, tqdm" || { echo "error: dml_csr did not install into $VENV" >&2; exit 1; }
    if [ "$EXTRAS" = dev ]; then
        "$PY" -c "import pytest" || { echo "error: the dev extra did not install into $VENV" >&2; exit 1; }
        "$PY" -m ipykernel install --sys-prefix --name python3 >/dev/null 2>&1 || true
    fi
    echo "$here" > "$stamp"
fi
