#!/usr/bin/env bash
# Reproduces the "Encrypted inference" table of the README (CPU, about 20 minutes):
# digits MLPs (hidden 64,32: two polynomial layers, the depth a single CKKS
# evaluation carries at degree 22) at degrees 2, 8, 22 and the small CNN at degree 2,
# each trained by pnn-train, then run encrypted by pnn-he.
source "$(dirname "$0")/env.sh"
OUT=${1:-runs/he}
SAMPLES=${SAMPLES:-10}
reports=()
for d in 2 8 22; do
  pnn-train --dataset digits --model mlp --hidden 64,32 --degree "$d" --epochs 40 --batch-size 64 \
    --no-progress --no-plots --out-dir "$OUT/mlp-$d" --overwrite | tail -n 1
  pnn-he "$OUT/mlp-$d/best.pt" --samples "$SAMPLES" --json "$OUT/mlp-$d/he.json"
  reports+=("$OUT/mlp-$d/he.json")
done
pnn-train --dataset digits --model small-cnn --degree 2 --epochs 40 --batch-size 64 \
  --no-progress --no-plots --out-dir "$OUT/cnn-2" --overwrite | tail -n 1
pnn-he "$OUT/cnn-2/best.pt" --samples "${CNN_SAMPLES:-2}" --json "$OUT/cnn-2/he.json"
reports+=("$OUT/cnn-2/he.json")
python "$(dirname "$0")/he_table.py" "${reports[@]}" | tee "$OUT/he.md"
