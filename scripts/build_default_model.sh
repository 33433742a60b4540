#!/usr/bin/env bash
# Rebuild the shipped default checkpoint (neuroq/model/checkpoints/default) from the shipped
# synthetic corpus. Deterministic for a given machine and thread count (seed 0, one torch thread: on a shared 2-core machine a second thread mostly waits); see
# docs/model.md for the figures of the committed build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m neuroq train \
    --corpus default \
    --mode layered \
    --out neuroq/model/checkpoints/default \
    --vocab-size 4000 \
    --embed-dim 64 --hidden-dim 128 --num-heads 4 --num-layers 2 --max-seq-len 128 \
    --epochs 4 --batch-size 16 --lr 2e-3 --seq-len 64 --seed 0 --threads 1 "$@"
# Optimizer moments are only needed to resume; the shipped model does not carry them.
rm -f neuroq/model/checkpoints/default/optimizer.safetensors
