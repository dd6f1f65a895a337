#!/usr/bin/env bash
# The exact command that produced weights/mghf-dfe-default.safetensors (see README, "Default weights").
# No GPU was available, so this is the CPU recipe that fits in about 40 minutes on the 2-core
# development machine: the paper's optimiser, batch and lr, at crop 64 instead of 128, 7 epochs
# instead of 20. With a GPU (or more time) run the paper's recipe instead:
#   node dist/cli.js pretrain --data DIR --epochs 20 --batch 32 --lr 5e-4 --crop 128 --out w.safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/pretrain/imagenette2-224}
MGHF_NUM_THREADS=${MGHF_NUM_THREADS:-2} node dist/cli.js pretrain \
  --data "$DATA" --epochs 7 --batch 32 --lr 5e-4 --crop 64 --seed 0 \
  --out weights/mghf-dfe-default.safetensors "$@"
