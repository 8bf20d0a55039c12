#!/bin/bash
# The syndigits half of the digits grid on syndigits version 2 at today's defaults (the cpu profile, TLlib's optimiser
# protocol): every method but the StarGAN ones (one StarGAN of four domains, 3,000 iterations, is beyond 2 CPU cores
# here), syndigits->MNIST and syndigits->ucidigits, seeds 0 and 1, one thread per cell, two cells at a time, one
# method after another (source_only first: SHOT reads its cell). From the repository root, with the .venv active:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/digits-cpu-syndigits-v2/run.sh [OUT]
# then tables the finished cells of both tasks into OUT/results.md, .csv, .json and plots (copied here).
set -u
out=${1:-benchmarks/runs/digits-seeds-syndigits2mnist/cpu}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# --only globs; the cyclegan methods in one, so that cyclegan_dann and cyclegan_adda reuse cyclegan's translator
# (run alone, each trains its own, and the table refuses them as runs of another recipe: pixel_from)
methods="source_only mcc adda shot dann cdan dann_mcc bnm jan bsp mdd mcd dan coral afn adabn fixmatch mean_teacher
         dirt_t adda_fixmatch dann_dirt_t cyclegan*"
for task in syndigits2mnist syndigits2ucidigits; do
  for method in $methods; do
    da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --only "$task/$method/*" -o "$out" --jobs 2 ||
      echo "$task $method: not every cell finished"
  done
done
da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --only 'syndigits*' --finished -o "$out" &&
  cp "$out"/results.{md,csv,json} "$out"/*.png benchmarks/results/digits-cpu-syndigits-v2/
