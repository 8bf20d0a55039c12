#!/bin/bash
# The digits cpu grid's syndigits tasks (syndigits -> MNIST, syndigits -> ucidigits) for the feature methods of
# issues 25 and 28 beside the recipes' core methods, two seeds, and the recommendation over them with the
# StarGAN cells of benchmarks/results/stargan-cpu (same output directory). One compare per method, two cells at
# a time (2 cores), one thread each; source_only first (shot adapts its cell). Left out for the time they take
# here (20-30 min a cell): dirt_t, adda_fixmatch, dann_dirt_t, mcd, afn, and the cyclegan rows (committed in
# digits-cpu/). Run from the repository root:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/digits-cpu-syndigits/run.sh [OUT]
set -u
export OMP_NUM_THREADS=1
out=${1:-benchmarks/runs}/digits-cpu
here=benchmarks/results/digits-cpu-syndigits
for method in source_only dann mcc adda shot dann_mcc cdan bnm jan mean_teacher fixmatch dan coral bsp mdd adabn; do
  da-toolkit compare benchmarks/digits.yaml --profile cpu --jobs 2 --only "syndigits*/$method/*" -o "$out" \
    || echo "FAILED $method"
done
da-toolkit compare benchmarks/digits.yaml --profile cpu --finished --only 'syndigits*/*/*' -o "$out"
cp "$out"/{results.md,results.csv,results.json,results.png,selection_syndigits*.png} "$here"/
