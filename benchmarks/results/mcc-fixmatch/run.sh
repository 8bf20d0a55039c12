#!/bin/bash
# MCC then FixMatch (mcc_fixmatch, issue 25) on the four digit tasks at today's defaults (the digits grid's cpu
# profile), seeds 0 and 1, with MCC, ADDA then FixMatch and source-only beside it on the same machine, one thread
# per cell, two cells at a time. From the repository root, with the .venv active:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/mcc-fixmatch/run.sh [OUT] [JOINT]
# Table: OUT/results.md (-> results.md here). With JOINT, the `separate` folder of a finished
# joint-domain-batches/run.sh (its cpu-profile cells: every joint-training method), the recommendation is also made
# over the union of both folders' finished cells but the CycleGAN ones (OUT/combined/results.md -> combined.md here),
# this folder's cells where both have one.
set -u
out=${1:-benchmarks/runs/mcc-fixmatch}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for method in mcc_fixmatch mcc source_only adda_fixmatch; do
  da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --only "*/$method/*" -o "$out" --jobs 2 ||
    echo "$method: not every cell finished"
done
da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --finished -o "$out"
cp "$out"/results.{md,csv,json,png} benchmarks/results/mcc-fixmatch/
if [ -n "${2:-}" ]; then
  bash benchmarks/merge_cells.sh "$out/combined" "$2" "$out"  # this folder's cells win
  da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --finished -o "$out/combined"
  for ext in md csv json png; do cp "$out/combined/results.$ext" "benchmarks/results/mcc-fixmatch/combined.$ext"; done
fi
