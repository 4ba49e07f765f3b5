#!/usr/bin/env bash
# Reproduces docs/encrypted.md's tables (written there): the CryptoNets network on MNIST
# (degrees 2, 8, 22) and a digits MLP (hidden 64,32, degree 22), each trained by
# pnn-train when OUT holds no checkpoint yet, then run by pnn-he in batch packing
# (the whole test set, the last batch filled with repeats) and in sample packing
# (latency: 2 samples of the MLP, 1 of CryptoNets). Every timed run holds
# /tmp/pnn_measure.lock and records the load. Hours of CPU on a 2-core machine
# (mostly cryptonets at degrees 8 and 22: one N=32768 batch each).
# PNN_HE_NO_ENV=1 uses the current environment instead of scripts/env.sh's.
set -euo pipefail
[ -n "${PNN_HE_NO_ENV:-}" ] || source "$(dirname "$0")/../../scripts/env.sh"
OUT=${1:-runs/he}
DATA=${PNN_DATA:-data}
mkdir -p "$OUT"
reports=()
# --recalibrate-epoch 0: these figures were made with B fixed for the whole run, before
# recalibration after epoch 1 became the default at the preset B (docs/accuracy.md).
train() {  # DIR pnn-train flags...
  local dir=$1; shift
  [ -f "$OUT/$dir/best.pt" ] || pnn-train "$@" --recalibrate-epoch 0 --no-progress --no-plots --out-dir "$OUT/$dir" \
    --overwrite | tail -n 1
}
measure() {  # NAME pnn-he arguments...
  local name=$1; shift
  echo "== $name: pnn-he $*"
  flock /tmp/pnn_measure.lock pnn-he "$@" --json "$OUT/$name.json" | tee "$OUT/$name.txt"
  reports+=("$OUT/$name.json")
}
MNIST=(--dataset mnist --data-dir "$DATA" --model cryptonets --scheduler cosine)
train cn-2 "${MNIST[@]}" --degree 2 --epochs 60 --dropout 0.3
train cn-8 "${MNIST[@]}" --degree 8 --epochs 30 --dropout 0.25
train cn-22 "${MNIST[@]}" --degree 22 --epochs 30 --dropout 0.25
train mlp-22 --dataset digits --model mlp --hidden 64,32 --degree 22 --epochs 40 --batch-size 64
measure batch-cn-2 "$OUT/cn-2/best.pt" --data-dir "$DATA" --batch --fill
measure batch-mlp-22 "$OUT/mlp-22/best.pt" --batch --fill
measure batch-mlp-22-s45 "$OUT/mlp-22/best.pt" --batch --fill --scale-bits 45
measure sample-mlp-22 "$OUT/mlp-22/best.pt" --samples 2
measure sample-cn-2 "$OUT/cn-2/best.pt" --data-dir "$DATA" --samples 1
measure batch-cn-8 "$OUT/cn-8/best.pt" --data-dir "$DATA" --batch --fill
measure batch-cn-22 "$OUT/cn-22/best.pt" --data-dir "$DATA" --batch --fill
measure batch-cn-22-s45 "$OUT/cn-22/best.pt" --data-dir "$DATA" --batch --fill --scale-bits 45
python "$(dirname "$0")/he_table.py" "${reports[@]}" | tee "$OUT/he.md"
python "$(dirname "$0")/../docs_section.py" docs/encrypted.md he < "$OUT/he.md"
