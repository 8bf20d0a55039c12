#!/bin/bash
# FixMatch after its batch-norm fix (2026-12-05: source, weak and strong batches through the classifier one at a
# time): fixmatch and adda_fixmatch, with source_only beside them, on MNIST->USPS and USPS->MNIST at today's
# defaults (the digits grid's cpu profile), seeds 0 and 1, one thread per cell, two cells at a time. The
# syndigits cells of both methods were re-run in digits-cpu-syndigits-v2's own output folder (its run.sh, after
# deleting their eight cell directories). From the repository root, with the .venv active:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/digits-cpu-fixmatch/run.sh [OUT]
set -u
out=${1:-benchmarks/runs/digits-cpu-fixmatch}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for task in mnist2usps usps2mnist; do
  for method in source_only fixmatch adda_fixmatch; do
    da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --only "$task/$method/*" -o "$out" --jobs 2 ||
      echo "$task $method: not every cell finished"
  done
done
da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --finished -o "$out" &&
  cp "$out"/results.{md,csv,json} "$out"/*.png benchmarks/results/digits-cpu-fixmatch/
