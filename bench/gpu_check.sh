#!/usr/bin/env bash
# GPU check: on a machine with a GPU and torch preinstalled (no network), build the
# extension for this GPU only, run the tests (CUDA ones included) and the speed
# script on the GPU, and print a short table. Target: under ~8 minutes on an H200.
#   bash bench/gpu_check.sh            # uses the python on PATH
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
start=$(date +%s)
cap=$($PY -c 'import torch; p = torch.cuda.get_device_capability(); print(f"{p[0]}.{p[1]}")')
echo "== $($PY -c 'import torch; print(torch.cuda.get_device_name(), "torch", torch.__version__)'), sm_${cap/./}"
export TORCH_CUDA_ARCH_LIST="$cap" PNN_EXT_CUDA=1 MAX_JOBS=16
t0=$(date +%s)
$PY setup.py build_ext --inplace > gpu_build.log 2>&1 || { tail -n 40 gpu_build.log; echo "BUILD FAILED"; exit 1; }
echo "== build: $(( $(date +%s) - t0 ))s"
t0=$(date +%s)
$PY -m pytest -q -m "not slow" -x tests -p no:cacheprovider 2>&1 | tail -n 15
test_rc=${PIPESTATUS[0]}
echo "== tests: rc=$test_rc, $(( $(date +%s) - t0 ))s"
for spec in "268435456 22" "67108864 22" "16777216 8"; do
  set -- $spec
  $PY bench/cpu_speed.py --device cuda --numel "$1" --degree "$2" --reps 20 --ref-reps 3 2>&1 | tail -n 5
done
echo "== total $(( $(date +%s) - start ))s, tests rc=$test_rc"
exit "$test_rc"
