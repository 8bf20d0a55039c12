#!/bin/bash
# Six seeds instead of two of the syndigits->ucidigits cells that decided the digit optimiser (issue 28): source-only,
# ADDA, MCC and SHOT at the digits grid's cpu profile (the recipes' own optimiser) and at its cpu_tllib_optimiser
# profile (Transfer-Learning-Library's), one thread per cell, one chain per profile (two cells at a time). From the
# repository root, with the project's .venv active:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/digits-seeds/run.sh [OUT]
# then per profile `da-toolkit compare benchmarks/digits.yaml --profile P --seeds 0,1,2,3,4,5 --only
# 'syndigits2ucidigits/*' --finished -o OUT/P` writes OUT/P/results.md, .csv, .json and plots (copied here into P/).
set -u
out=${1:-benchmarks/runs/digits-seeds}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for profile in cpu cpu_tllib_optimiser; do
  for method in source_only adda shot mcc; do  # shot reads source_only's classifier (same seed)
    da-toolkit compare benchmarks/digits.yaml --profile "$profile" --seeds 0,1,2,3,4,5 \
      --only "syndigits2ucidigits/$method/*" -o "$out/$profile" || echo "$profile $method: not every cell finished"
  done &
done
wait
for profile in cpu cpu_tllib_optimiser; do
  da-toolkit compare benchmarks/digits.yaml --profile "$profile" --seeds 0,1,2,3,4,5 --only 'syndigits2ucidigits/*' \
    --finished -o "$out/$profile" && mkdir -p "benchmarks/results/digits-seeds/$profile" &&
    cp "$out/$profile"/results.{md,csv,json} "$out/$profile"/*.png "benchmarks/results/digits-seeds/$profile/"
done
