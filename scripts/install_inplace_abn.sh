#!/usr/bin/env bash
# Build and install the optional inplace-abn 1.1.0 kernels (model.norm: inplace_abn) into a virtual environment.
# Usage: scripts/install_inplace_abn.sh [VENV_DIR]     (default .venv; does nothing when inplace_abn imports already)
#
# Its PyPI sdist needs three things a plain `pip install inplace-abn` does not give it:
#   * a version: it takes it from git through setuptools_scm, absent from an sdist -> SETUPTOOLS_SCM_PRETEND_VERSION;
#   * the installed torch at build time (its setup.py imports torch) -> --no-build-isolation;
#   * with a CUDA build of torch, the CUDA toolkit (nvcc; CUDA_HOME or /usr/local/cuda*), and on a machine without a
#     GPU a libcudart.so on LIBRARY_PATH for the link step. Without a visible GPU, TORCH_CUDA_ARCH_LIST defaults to
#     one architecture (the kernels are not used there; this keeps the build to about a minute on 2 cores).
set -euo pipefail
VENV=${1:-.venv}
PY="$VENV/bin/python"
cd "$(dirname "$0")/.."
[ -x "$PY" ] || { echo "error: no virtual environment at $VENV (run make venv first)" >&2; exit 1; }
if "$PY" -c "import inplace_abn" >/dev/null 2>&1; then
    echo "inplace_abn already installed in $VENV"
    exit 0
fi
"$PY" -m pip install -q setuptools_scm 2>&1 | grep -v "^WARNING: Location" || true
if "$PY" -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)"; then
    if [ -z "${CUDA_HOME:-}" ]; then
        for d in /usr/local/cuda /usr/local/cuda-*; do
            if [ -x "$d/bin/nvcc" ]; then CUDA_HOME=$d; break; fi
        done
    fi
    if [ -z "${CUDA_HOME:-}" ] || [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
        echo "error: torch is a CUDA build, so inplace-abn compiles CUDA kernels, but no nvcc was found;" \
             "set CUDA_HOME to a CUDA toolkit" >&2
        exit 1
    fi
    export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
    export LIBRARY_PATH="$CUDA_HOME/lib64:$CUDA_HOME/lib:${LIBRARY_PATH:-}"
    if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0}
    fi
    echo "building inplace-abn 1.1.0 with CUDA from $CUDA_HOME (TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-auto})"
else
    echo "building inplace-abn 1.1.0 (CPU kernels only: torch is a CPU build)"
fi
SETUPTOOLS_SCM_PRETEND_VERSION=1.1.0 MAX_JOBS=${MAX_JOBS:-2} \
    "$PY" -m pip install -q --no-build-isolation --no-deps inplace-abn==1.1.0 2>&1 | grep -v "^WARNING: Location" || true
"$PY" -c "import inplace_abn" || { echo "error: inplace-abn did not install into $VENV" >&2; exit 1; }
echo "inplace_abn installed in $VENV"
