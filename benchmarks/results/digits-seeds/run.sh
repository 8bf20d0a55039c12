#!/bin/bash
# One digit task's cells at both digit optimisers (issue 28): the digits grid's cpu_former_optimiser profile (the
# digit recipes' optimiser until 2026-12-04, then the cpu profile) and its cpu profile (Transfer-Learning-Library's,
# then cpu_tllib_optimiser), one thread per cell, one chain per profile (two cells at a time). From the repository
# root, with the project's .venv active:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/digits-seeds/run.sh [OUT]
# is the six-seed study of syndigits->ucidigits (source-only, ADDA, SHOT, MCC; results in cpu/ and
# cpu_former_optimiser/ here), and
#   DA_TOOLKIT_DATA=../shared/data TASK=syndigits2mnist SEEDS=0,1 METHODS="source_only mcc dann cdan adda shot" \
#     bash benchmarks/results/digits-seeds/run.sh benchmarks/runs/digits-seeds-syndigits2mnist
# the syndigits->MNIST cells (in syndigits2mnist/). Then per profile `da-toolkit compare benchmarks/digits.yaml --profile
# P --seeds SEEDS --only 'TASK/*' --finished -o OUT/P` writes OUT/P/results.md, .csv, .json and plots (copied here).
set -u
out=${1:-benchmarks/runs/digits-seeds}
task=${TASK:-syndigits2ucidigits}
seeds=${SEEDS:-0,1,2,3,4,5}
methods=${METHODS:-source_only adda shot mcc}  # shot reads source_only's classifier (same seed): source_only first
dest=benchmarks/results/digits-seeds$([ "$task" = syndigits2ucidigits ] || echo "/$task")
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for profile in cpu_former_optimiser cpu; do
  for method in $methods; do
    da-toolkit compare benchmarks/digits.yaml --profile "$profile" --seeds "$seeds" \
      --only "$task/$method/*" -o "$out/$profile" || echo "$profile $method: not every cell finished"
  done &
done
wait
for profile in cpu_former_optimiser cpu; do
  da-toolkit compare benchmarks/digits.yaml --profile "$profile" --seeds "$seeds" --only "$task/*" \
    --finished -o "$out/$profile" && mkdir -p "$dest/$profile" &&
    cp "$out/$profile"/results.{md,csv,json} "$out/$profile"/*.png "$dest/$profile/"
done
