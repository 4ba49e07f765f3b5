#!/usr/bin/env bash
# Reproduces docs/finetune.md's table (written there) (CPU, about
# 10 minutes on 2 cores): the small CNN on MNIST (idx files in $PNN_DATA), per seed
#   relu for 1 and for 2 epochs (the pretrained networks),
#   degree 22 fine-tuned from them (--init-from) for 2 and 1 epochs, every activation
#   swapped at once, and for 1 epoch with --replace progressive,
#   degree 22 from scratch for 3 epochs (the same total),
# all with the divergence guard on (its non-finite steps and rollbacks are the
# stability figures). Output: $1 (default runs/finetune)/finetune.md.
# SEEDS (default "0 1 2") and EXTRA (more pnn-train flags for every run, e.g.
# "--lr 1e-2") change the grid; PNN_NO_ENV=1 uses the Python environment already active
# instead of scripts/env.sh.
: "${PNN_DATA:?set PNN_DATA to the directory that holds MNIST (see docs/training.md, Data)}"
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ -n "${PNN_NO_ENV:-}" ] || source "$HERE/../../scripts/env.sh"
OUT=${1:-runs/finetune}
SEEDS=${SEEDS:-0 1 2}
read -r -a EXTRA <<< "${EXTRA:-}"
# --recalibrate-epoch 0: these figures were made with B fixed for the whole run, before
# recalibration after epoch 1 became the default at the preset B (docs/accuracy.md).
train() { python -m pnn_ext.train --dataset mnist --data-dir "$PNN_DATA" --no-progress --no-plots --overwrite \
  --recalibrate-epoch 0 "${EXTRA[@]}" "$@" | tail -n 1; }
for s in $SEEDS; do
  for e in 1 2; do
    train --activation relu --epochs "$e" --seed "$s" --out-dir "$OUT/relu$e/seed$s"
  done
  train --degree 22 --epochs 1 --seed "$s" --init-from "$OUT/relu2/seed$s/last.pt" --out-dir "$OUT/ft1/seed$s"
  train --degree 22 --epochs 2 --seed "$s" --init-from "$OUT/relu1/seed$s/last.pt" --out-dir "$OUT/ft2/seed$s"
  train --degree 22 --epochs 1 --seed "$s" --init-from "$OUT/relu2/seed$s/last.pt" --replace progressive \
    --out-dir "$OUT/ft1-progressive/seed$s"
  train --degree 22 --epochs 3 --seed "$s" --out-dir "$OUT/scratch3/seed$s"
done
python "$HERE/finetune_table.py" "$OUT" | tee "$OUT/finetune.md"
python "$HERE/../docs_section.py" docs/finetune.md finetune < "$OUT/finetune.md"
