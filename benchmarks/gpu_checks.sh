#!/usr/bin/env bash
# Every GPU check in one command, for a machine with one CUDA GPU (run from the repository root):
#   bash benchmarks/gpu_checks.sh [OUT_DIR]
# 1. tests/test_cuda.py: training in float32 and mixed precision, evaluation, fp16/bf16 artifacts and
#    device slots on the GPU;
# 2. benchmarks/gpu.py: the training step eager and captured as a CUDA graph against the large-batch
#    floor, inference, K = 1, 2, 4, 8 runs sharing the GPU, the paper's GPU-hours against its floor;
# 3. the embedded default workflow on CUDA (4 jobs sharing the GPU), its report and results, and each
#    job's seconds before its first training step.
# Needs python3 with torch, torchvision, timm, numpy, pandas, safetensors, tqdm, scikit-learn, scipy,
# onnx, onnxruntime, jinja2, pyyaml. Missing ones (snakemake, plotly, openTSNE, jsonschema) may come as
# wheels in .whl/ (pip download on a machine with a package index); they are installed into /tmp/site.
set -u
OUT=${1:-${OUT:-gpu-checks}}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
python3 -c "import torch, timm, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/device.txt"

echo "== 1. CUDA tests"
timeout "${CUDA_TESTS_S:-150}" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/cuda_tests.log"

echo "== 2. GPU benchmark"
timeout "${BENCH_S:-330}" python3 benchmarks/gpu.py --budget "${BENCH_BUDGET:-270}" --max-batch 256 --steps 30 \
  --json "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.log"

echo "== 3. Embedded default workflow on CUDA"
if python3 -c "import snakemake, plotly, openTSNE" 2>/dev/null; then
  cat > /tmp/cuda.yaml <<'YAML'
train: {device: cuda}
gpu: {jobs_per_device: 4}
YAML
  start=$(date +%s)
  timeout "${WORKFLOW_S:-200}" python3 -m snakemake --cores 16 --resources gpu=4 --workflow-profile profiles/default \
    --configfile config/config.yaml /tmp/cuda.yaml > "$OUT/workflow.log" 2>&1
  echo "workflow exit $? after $(( $(date +%s) - start )) s"; tail -5 "$OUT/workflow.log"
  cp results/report.html "$OUT/" 2>/dev/null
  python3 - <<'PY' | tee "$OUT/first_step.txt"
import json, pathlib
rows = [json.loads(p.read_text()) for p in sorted(pathlib.Path("results/runs").glob("*/*/*/seed*/train.json"))]
for r in rows:
    print(f"{r['dataset']}/{r['model']}/{r['augment']} seed {r['seed']}: first step after {r.get('first_step_seconds') or 0:.1f} s, "
          f"{r['seconds_per_epoch']:.1f} s per epoch ({r.get('step', 'eager')} step)")
PY
  (tar czf "$OUT/results.tgz" --exclude='*.safetensors' --exclude='*.onnx' --exclude='*.pt' \
    --exclude='*.npy' --exclude='*.png' results 2>/dev/null)
else
  echo "snakemake, plotly or openTSNE missing: the workflow did not run"
fi
