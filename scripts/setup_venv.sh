#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install what is missing: torch and torchvision (pinned here, the one
# place versions are pinned; override with TORCH_SPEC / TORCHVISION_SPEC), then this package with its dev extras.
# Usage: scripts/setup_venv.sh [VENV_DIR]     (default .venv)
set -euo pipefail
VENV=${1:-.venv}
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
stamp="$VENV/.dml_csr-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "installing dml_csr[dev] (editable) into $VENV"
    "$PY" -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
    "$PY" -c "import dml_csr, cv2, yaml, tqdm, pytest" || { echo "error: dml_csr did not install into $VENV" >&2; exit 1; }
    "$PY" -m ipykernel install --sys-prefix --name python3 >/dev/null 2>&1 || true
    touch "$stamp"
fi
