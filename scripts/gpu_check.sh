#!/usr/bin/env bash
# The GPU check in one call, on a machine with one CUDA GPU (about 6 minutes): see scripts/gpu_check.py.
#   bash scripts/gpu_check.sh [OUT.json]          (PYTHON=... picks the interpreter; default python)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" scripts/gpu_check.py --out "${1:-gpu_check.json}"
