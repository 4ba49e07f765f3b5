#!/usr/bin/env bash
# Reproduces the README's "Stability map" tables (CPU; 2 worker processes): pnn-sweep
# maps of B x learning rate x degree for the four method variants of pnn-ablate, with
# --bound auto and the preset B (bound=none) as rows, on digits (the published MLP,
# 10 epochs) and MNIST (the published MLP on a 20000-sample training subset, 2 epochs:
# the full set does not fit this machine's budget), and B cliffs per degree (full
# method, lr 1e-3). 3 seeds everywhere, divergence guard off. Finished runs are kept
# (pnn-sweep skips them), so an interrupted script continues where it stopped.
# MNIST is read from its original idx files in $PNN_DATA (see the README's Data section).
# Output: $1 (default runs/stability)/*/sweep.{md,json,png} and stability.md (the tables).
: "${PNN_DATA:?set PNN_DATA to the directory that holds MNIST (see the README)}"
source "$(dirname "$0")/env.sh"
OUT=${1:-runs/stability}
JOBS=${JOBS:-2}
mkdir -p "$OUT"
DIGITS=(--dataset digits --model mlp --epochs 10 --batch-size 64)
MNIST=(--dataset mnist --data-dir "$PNN_DATA" --model mlp --train-subset 20000 --epochs 2)
pnn-sweep --grid bound=auto,none,6,12,24,47,94 --grid lr=1e-3,1e-2,3e-2,1e-1 --grid degree=2,8,22,32 \
  --seeds 0,1,2 --jobs "$JOBS" --out-dir "$OUT/digits-map" -- "${DIGITS[@]}" > "$OUT/digits-map.log"
pnn-sweep --grid bound=1,2,3,4,6,8,12,16,24,32,47,64,94,128 --grid degree=2,8,22,32 --variants full,no-boundary \
  --seeds 0,1,2 --jobs "$JOBS" --out-dir "$OUT/digits-cliff" -- "${DIGITS[@]}" > "$OUT/digits-cliff.log"
pnn-sweep --grid bound=auto,none,24 --grid lr=1e-3,3e-2 --grid degree=22,8,32,2 \
  --seeds 0,1,2 --jobs "$JOBS" --out-dir "$OUT/mnist-map" -- "${MNIST[@]}" > "$OUT/mnist-map.log"
pnn-sweep --grid bound=3,6,12,24,47,94 --grid degree=2,8,22,32 --variants full \
  --seeds 0,1,2 --jobs "$JOBS" --out-dir "$OUT/mnist-cliff" -- "${MNIST[@]}" > "$OUT/mnist-cliff.log"
python "$(dirname "$0")/stability_table.py" digits="$OUT/digits-map" mnist="$OUT/mnist-map" \
  digits="$OUT/digits-cliff" mnist="$OUT/mnist-cliff" > "$OUT/stability.md"
cat "$OUT/stability.md"
