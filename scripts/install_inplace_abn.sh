#!/usr/bin/env bash
# Build and install the optional inplace-abn 1.1.0 kernels (model.norm: inplace_abn) into a virtual environment.
# Usage: scripts/install_inplace_abn.sh [VENV_DIR]     (default .venv; does nothing when inplace_abn imports already)
#
# Its PyPI sdist needs three things a plain `pip install inplace-abn` does not give it:
#   * a version: it takes it from git through setuptools_scm, absent from an sdist -> SETUPTOOLS_SCM_PRETEND_VERSION;
#   * the installed torch at build time (its setup.py imports torch) -> --no-build-isolation (and no cached wheel,
#     which may have been built against another torch);
#   * with a CUDA build of torch, a CUDA toolkit of the same major version (CUDA_HOME, else
#     /usr/local/cuda-<torch's CUDA>, /usr/local/cuda, the nvcc on PATH), and on a machine without a GPU a libcudart.so
#     on LIBRARY_PATH for the link step. Without a visible GPU, TORCH_CUDA_ARCH_LIST defaults to "8.0+PTX" (one
#     architecture plus PTX, which newer GPUs compile at load; the build then takes about a minute on 2 cores).
set -euo pipefail
VENV=$(cd "$(dirname "${1:-.venv}")" 2>/dev/null && pwd)/$(basename "${1:-.venv}")  # absolute, before the cd
cd "$(dirname "$0")/.."
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "error: no virtual environment at $VENV (run make venv first)" >&2; exit 1; }
if "$PY" -c "import inplace_abn" >/dev/null 2>&1; then
    echo "inplace_abn already installed in $VENV"
    exit 0
fi
pip_quiet() {  # pip's own exit status, without its 'Location ... is ignored' warnings
    "$PY" -m pip "$@" 2> >(grep -v "^WARNING: Location" >&2)
}
pip_quiet install -q setuptools_scm
torch_cuda=$("$PY" -c "import torch; print(torch.version.cuda or '')")
if [ -n "$torch_cuda" ]; then
    if [ -z "${CUDA_HOME:-}" ]; then
        nvcc_dir=$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /nonexistent/bin/nvcc)")")
        for d in "/usr/local/cuda-$torch_cuda" /usr/local/cuda "$nvcc_dir"; do
            if [ -x "$d/bin/nvcc" ]; then CUDA_HOME=$d; break; fi
        done
    fi
    if [ -z "${CUDA_HOME:-}" ] || [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
        echo "error: torch is built with CUDA $torch_cuda, so inplace-abn compiles CUDA kernels, but no nvcc was" \
             "found; set CUDA_HOME to a CUDA $torch_cuda toolkit" >&2
        exit 1
    fi
    nvcc_version=$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
    if [ "${nvcc_version%%.*}" != "${torch_cuda%%.*}" ]; then
        echo "error: $CUDA_HOME has CUDA $nvcc_version but torch is built with CUDA $torch_cuda; set CUDA_HOME to a" \
             "matching toolkit" >&2
        exit 1
    fi
    export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
    export LIBRARY_PATH="$CUDA_HOME/lib64:$CUDA_HOME/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
    if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0+PTX}
    fi
    echo "building inplace-abn 1.1.0 with CUDA $nvcc_version from $CUDA_HOME" \
         "(TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-the visible GPUs})"
else
    echo "building inplace-abn 1.1.0 (CPU kernels only: torch is a CPU build)"
fi
log="$VENV/inplace_abn-build.log"
if ! SETUPTOOLS_SCM_PRETEND_VERSION=1.1.0 MAX_JOBS=${MAX_JOBS:-2} \
    "$PY" -m pip install --no-cache-dir --no-build-isolation --no-deps inplace-abn==1.1.0 >"$log" 2>&1; then
    # pip's own report is a thousand lines of compiler warnings; the reason is in the lines that say error
    echo "error: inplace-abn 1.1.0 did not build; the compiler's errors (whole log: $log):" >&2
    grep -E "error:|Error:|FAILED|No space left|Killed|fatal" "$log" | grep -v "warning:" \
        | head -20 >&2 || true
    echo "free space where it built: $(df -h "${TMPDIR:-/tmp}" | awk 'NR == 2 {print $4 " of " $2}')" >&2
    exit 1
fi
"$PY" -c "import inplace_abn" || { echo "error: inplace-abn did not install into $VENV" >&2; exit 1; }
echo "inplace_abn installed in $VENV"
