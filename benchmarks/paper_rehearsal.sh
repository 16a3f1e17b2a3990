#!/usr/bin/env bash
# The paper's own run rehearsed at the paper's 224 px, for a GPU machine (run from the repository root):
#   bash benchmarks/paper_rehearsal.sh [GPUS]
# It is tests/test_paper_rehearsal.py (make test runs it at 96 px on the CPU): config/paper.yaml as it
# is, on tiny datasets in the official layouts and a cache of weight files shaped like the public ones,
# first with AlexNet's file unusable (the report names the missing run), then complete (37 runs).
# At 224 px it also checks that every training, evaluation and compression job fits the GPU at the
# paper's batch of 16. Kept apart from benchmarks/gpu_checks.sh, which stays within its 8 minutes.
# Needs the project's environment (make env; on a machine without a package index, the wheels that
# gpu_checks.sh installs from .whl/).
set -euo pipefail
cd "$(dirname "$0")/.."
GPUS=${1:-1}
if [ -d .whl ] && ! python3 -c "import snakemake" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
CVM_REHEARSAL_SIZE=224 CVM_REHEARSAL_GPUS="$GPUS" "$PY" -m pytest -q -s -p no:cacheprovider tests/test_paper_rehearsal.py
