#!/usr/bin/env bash
# Every GPU check in one command, for a machine with one CUDA GPU (run from the repository root):
#   bash benchmarks/gpu_checks.sh [OUT_DIR] [SECTION ...]
# SECTION is any of tests, bench, workflow (default: all three, in that order):
# - tests: tests/test_cuda.py: training in float32 and mixed precision, evaluation, fp16/bf16 artifacts,
#   device slots, and the step captured as a CUDA graph against the eager one;
# - bench: benchmarks/gpu.py: the batch-16 step eager and captured against the large-batch floor,
#   inference, K = 1, 2, 4, 8 runs sharing the GPU (images/s, memory, CPU cores), the first-step cost of
#   the embedded default's jobs, and the paper's GPU-hours against its floor;
# - workflow: the embedded default on CUDA (4 jobs sharing the GPU) to its report, and each training
#   job's seconds to its first step (benchmarks/first_steps.py).
# The whole command ends within GPU_CHECKS_S seconds (default 460, under 8 minutes, machine start not
# counted): each section gets what the sections after it leave it, and one named alone gets all of it,
# so a rerun of what did not finish is `bash benchmarks/gpu_checks.sh OUT_DIR workflow`, and
# `RESUME_FROM=OLD/gpu.json bash benchmarks/gpu_checks.sh OUT_DIR bench` measures only what the benchmark
# of an earlier run (on the same card) left out. Everything lands in OUT_DIR (gpu.json is rewritten
# after each benchmark section, so a cut run keeps its numbers);
# the last lines say which sections passed. Exit status: 0 if all the sections run passed.
#
# Needs python3 with torch, torchvision, timm, numpy, pandas, safetensors, tqdm, scikit-learn, scipy,
# onnx, onnxruntime, jinja2, pyyaml, and jsonschema (every section: the package checks configurations with
# it); the workflow also needs snakemake, plotly and openTSNE. `.venv/bin/python benchmarks/gpu_wheels.py`
# puts these four and what they need as wheels in .whl/ on a machine with a package index, and this
# script installs them from there into /tmp/site where the Python it runs lacks any of them.
#
# CHECKS_DEVICE=cpu runs the same script without a GPU, at a tiny size, with the workflow planned but
# not run (snakemake -n): tests/test_benchmarks.py runs it so that the script itself is tested.
set -u
OUT=${1:-${OUT:-gpu-checks}}
shift $(( $# > 0 ? 1 : 0 ))
SECTIONS=" ${*:-tests bench workflow} "
TOTAL=${GPU_CHECKS_S:-460}
PY=${PYTHON:-python3}
DEVICE=${CHECKS_DEVICE:-cuda}
REPO=$PWD
WORK=${CHECKS_WORKDIR:-$REPO}  # where the workflow writes results/ (the checkout, as `make run` does)
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
WORK=$(cd "$WORK" && pwd)
chosen() { [[ "$SECTIONS" == *" $1 "* ]]; }
for s in $SECTIONS; do
  case $s in tests|bench|workflow) ;; *) echo "unknown section '$s': use tests, bench or workflow" >&2; exit 2;; esac
done
# seconds planned for each section; a section not run plans nothing, so the others get its time
plan_tests=$(chosen tests && echo "${TESTS_S:-80}" || echo 0)
plan_bench=$(chosen bench && echo "${BENCH_S:-180}" || echo 0)   # the benchmark's --budget; +40 s margin below
plan_workflow=$(chosen workflow && echo "${WORKFLOW_MIN_S:-120}" || echo 0)
left() { echo $(( TOTAL - SECONDS )); }
# the seconds a section may take: what is left less the plans after it, at most WANT, at least 10
share() { local want=$1 after=$2 s; s=$(( $(left) - after )); (( s > want )) && s=$want; (( s < 10 )) && s=10; echo $s; }
declare -A status
has_workflow_needs() { $PY -c "import snakemake, plotly, openTSNE, jsonschema" 2>/dev/null; }

if [ -d .whl ] && ! has_workflow_needs; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the wheels of .whl/ failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
else
  echo "no GPU: the smoke run on the CPU (CHECKS_DEVICE=$DEVICE)" | tee "$OUT/device.txt"
fi
$PY -c "import torch, timm, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/device.txt"

if chosen tests; then
  t=$(share "$plan_tests" $(( plan_bench + 40 + plan_workflow )))
  echo "== tests: tests/test_cuda.py ($t s at most)"
  timeout "$t" $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/cuda_tests.log"
  status[tests]=${PIPESTATUS[0]}
fi

if chosen bench; then
  budget=$(share "$plan_bench" $(( 40 + plan_workflow )))
  echo "== bench: benchmarks/gpu.py (budget $budget s, cut at $(( budget + 40 )) s)"
  if [ "$DEVICE" = cuda ]; then
    args=(--images 2048 --max-batch 256 --steps 20 --seconds 5 --model-steps 6)
  else
    args=(--device cpu --images 44 --size 32 --steps 1 --warmup 1 --seconds 1 --max-batch 32 --no-compile
          --model-steps 1 --workers 0 --concurrent 2 --models resnet18)
  fi
  if [ -n "${RESUME_FROM:-}" ]; then  # go on from an earlier run's gpu.json: what it measured is kept
    [ "$RESUME_FROM" -ef "$OUT/gpu.json" ] || cp "$RESUME_FROM" "$OUT/gpu.json" || exit 1
    args+=(--resume)
  fi
  timeout "$(( budget + 40 ))" $PY benchmarks/gpu.py --budget "$budget" "${args[@]}" --json "$OUT/gpu.json" 2>&1 \
    | tee "$OUT/gpu.log"
  status[bench]=${PIPESTATUS[0]}
fi

if chosen workflow; then
  t=$(share "$(left)" 10)
  echo "== workflow: the embedded default on CUDA ($t s at most)"
  cat > "$OUT/cuda.yaml" <<'YAML'
train: {device: cuda}
gpu: {jobs_per_device: 4}
YAML
  if ! has_workflow_needs; then
    echo "snakemake, plotly, openTSNE or jsonschema missing (benchmarks/gpu_wheels.py makes .whl/): not run"
    status[workflow]=missing
  else
    dry=(); [ "$DEVICE" = cuda ] || dry=(-n)
    start=$SECONDS
    timeout "$t" $PY -m snakemake "${dry[@]}" -s "$REPO/workflow/Snakefile" --directory "$WORK" --cores "$(nproc)" \
      --resources gpu=4 --workflow-profile "$REPO/profiles/default" \
      --configfile "$REPO/config/config.yaml" "$OUT/cuda.yaml" > "$OUT/workflow.log" 2>&1
    status[workflow]=$?
    echo "workflow exit ${status[workflow]} after $(( SECONDS - start )) s"; tail -5 "$OUT/workflow.log"
    if [ "$DEVICE" = cuda ]; then
      cp "$WORK/results/report.html" "$OUT/" 2>/dev/null
      $PY benchmarks/first_steps.py "$WORK/results" | tee "$OUT/first_steps.md"
      (cd "$WORK" && tar czf "$OUT/results.tgz" --exclude='*.safetensors' --exclude='*.onnx' --exclude='*.pt' \
        --exclude='*.npy' --exclude='*.png' results logs 2>/dev/null)
    fi
  fi
fi

echo "== after $SECONDS s of $TOTAL:"
rc=0
for s in $SECTIONS; do
  case ${status[$s]} in
    0) echo "$s: passed" ;;
    124|137) echo "$s: cut at its time limit (exit ${status[$s]})"; rc=1 ;;
    *) echo "$s: failed (${status[$s]})"; rc=1 ;;
  esac
done
exit $rc
