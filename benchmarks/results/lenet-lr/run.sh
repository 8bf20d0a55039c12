#!/bin/bash
# DANN's learning rate for LeNet chosen without target labels (issue 28): benchmarks/lenet_lr.yaml, the digits grid's
# cpu profile with DANN at lr0 0.01 (its recipe), 0.03 and 0.1, four tasks, seeds 0 and 1, one thread per cell, two
# at a time. From the repository root, with the .venv active:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/lenet-lr/run.sh [OUT] [GRID]
# GRID: the run folder of a finished digits cpu grid (e.g. the seed-agreement grid's): its dann cells are copied in as
# the recipe's cells (the same recipe: compare checks it before it skips them) instead of being run again.
set -u
out=${1:-benchmarks/runs/lenet_lr-cpu}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
if [ -n "${2:-}" ]; then
  for run in "$2"/runs/*/dann/seed*; do
    task=$(basename "$(dirname "$(dirname "$run")")")
    mkdir -p "$out/runs/$task/dann" && cp -rn "$run" "$out/runs/$task/dann/"
  done
fi
da-toolkit compare benchmarks/lenet_lr.yaml --profile cpu -o "$out" --jobs 2 || echo "not every cell finished"
da-toolkit compare benchmarks/lenet_lr.yaml --profile cpu --finished -o "$out"
cp "$out"/results.{md,csv,json,png} benchmarks/results/lenet-lr/
