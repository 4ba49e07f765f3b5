#!/usr/bin/env bash
# The main job of the README: set-up and build (scripts/env.sh), then pnn-train on
# scikit-learn's digits (no download), small CNN with degree-22 polynomial
# activations, on the CPU. Outputs (checkpoints, metrics, summary, plots) go to
# runs/main, replaced on each call. Extra arguments go to pnn-train (--help).
source "$(dirname "$0")/env.sh"
exec pnn-train --dataset digits --model small-cnn --degree 22 --epochs 40 --batch-size 64 \
  --out-dir runs/main --overwrite "$@"
