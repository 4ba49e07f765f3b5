#!/usr/bin/env bash
# GPU check: on a machine with a GPU and torch, pytest and pytest-benchmark preinstalled
# (no network), build the extension for this GPU only, run the CUDA tests (plain, then the
# kernel tests under compute-sanitizer memcheck and racecheck), then the
# GPU section of the benchmark report (degree 22, 16M elements, plus CUDA-event timing
# at 64M), one training step of two networks with the fused op and with its compiled
# decomposition (bench/train_step.py, at most 5 minutes), a short ResNet-18 training run when
# MNIST is there (see below), and print a short table. About 15 minutes on an H200 with 16 cores.
#   bash bench/gpu_check.sh            # uses python3 on PATH; copies results to $OUT if set
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The build needs ninja; the GPU machine may lack it and has no network. Carry one:
#   mkdir -p .tools && cp "$(python -c 'import ninja, os; print(os.path.join(ninja.BIN_DIR, "ninja"))')" .tools/
# (the pip package's self-contained binary) and pass carry=[".tools"]; it is used first.
[ -x .tools/ninja ] && export PATH="$PWD/.tools:$PATH"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
cap=$($PY -c 'import torch; p = torch.cuda.get_device_capability(); print(f"{p[0]}.{p[1]}")') || exit 1
echo "== $($PY -c 'import torch; print(torch.cuda.get_device_name(), "| torch", torch.__version__)') | sm_${cap/./}"
export TORCH_CUDA_ARCH_LIST="$cap" PNN_EXT_CUDA=1
t0=$(date +%s)
$PY setup.py build_ext --inplace > gpu_build.log 2>&1 || { tail -n 40 gpu_build.log; echo "== BUILD FAILED"; exit 1; }
echo "== build: $(( $(date +%s) - t0 ))s"
export PNN_EXT_REQUIRE_EXTENSION=1  # a build that does not load fails here, no silent fallback
t0=$(date +%s)
$PY -m pytest -q -m "cuda and not slow" tests -p no:cacheprovider 2>&1 | tail -n 15
test_rc=${PIPESTATUS[0]}
echo "== CUDA tests: rc=$test_rc, $(( $(date +%s) - t0 ))s"
# The op tests of the CUDA device under compute-sanitizer: memcheck (out-of-bounds and
# misaligned accesses, leaks) and racecheck (shared-memory hazards between the threads of
# a block). Only the fused-op tests, a few minutes each under the tools.
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n1)
if [ -n "$SAN" ]; then
  for tool in memcheck racecheck; do
    t0=$(date +%s)
    "$SAN" --tool "$tool" --error-exitcode 99 --print-limit 20 --target-processes all \
      $PY -m pytest -q -x -m "cuda and not slow" tests/test_ops.py -p no:cacheprovider 2>&1 | tail -n 25
    rc=${PIPESTATUS[0]}
    echo "== compute-sanitizer $tool: rc=$rc, $(( $(date +%s) - t0 ))s"
    [ "$rc" -ne 0 ] && test_rc=$rc
  done
else
  echo "== compute-sanitizer not found: memcheck/racecheck skipped"
fi
t0=$(date +%s)
$PY bench/report.py --device cuda --sizes 16M --degrees 22 2>&1 | grep -v "^W1\|^  " | tail -n 5
sed -n '/<!-- BEGIN GPU -->/,/<!-- END GPU -->/p' docs/benchmarks.md | grep -E "^\||^GPU|^Measured|^##"
echo "== report: $(( $(date +%s) - t0 ))s"
# The whole network on CUDA (bench/train_step.py): one training step of the small CNN and of
# torchvision's resnet18, ReLU against degree 22, eager and under torch.compile, where the fused
# op (opaque to inductor) meets impl="decomposed" (plain operations inductor fuses with BatchNorm
# and the residual add). Does the decomposition win on CUDA? Bounded to 5 minutes.
t0=$(date +%s)
timeout 300 $PY bench/train_step.py --device cuda --reps 10 2>&1 | grep -v "^W1\|ready in"
echo "== training step, ReLU vs degree 22, fused vs decomposed: rc=${PIPESTATUS[0]}, $(( $(date +%s) - t0 ))s"
# A short GPU training run (ResNet-18, MNIST, degree 22) when MNIST's idx files are in
# $PNN_DATA (default: data/ in the repository, i.e. data/MNIST/raw/*.gz; see docs/training.md's
# Data section). Needs only torch and numpy (no plots, no progress bar).
DATA=${PNN_DATA:-data}
if [ -d "$DATA/MNIST/raw" ]; then
  t0=$(date +%s)
  $PY -m pnn_ext.train --dataset mnist --data-dir "$DATA" --model resnet18 --degree 22 --epochs 3 --batch-size 256 \
    --bf16 --channels-last --device cuda --no-progress --no-plots --out-dir runs/gpu --overwrite 2>&1 | tail -n 4
  echo "== GPU training run: $(( $(date +%s) - t0 ))s"
  [ -n "${OUT:-}" ] && cp runs/gpu/summary.json "$OUT"/gpu_train_summary.json 2>/dev/null
fi
[ -n "${OUT:-}" ] && cp docs/benchmarks.md bench/results-gpu.json gpu_build.log "$OUT"/ 2>/dev/null
echo "== total $(( $(date +%s) - start ))s, CUDA tests rc=$test_rc"
exit "$test_rc"
