#!/bin/bash
# The digits grid's cpu_long profile (issue 25): 4,000 iterations a stage instead of the cpu profile's 1,000, the
# longest budget that keeps the slowest composition (MCC then FixMatch) within the 20 minutes a cell on one thread
# that issue 25's aims allow. The two best compositions of the cpu grid (MCC then FixMatch, MCC then SHOT), the
# source-free SHOT from source-only's checkpoint, ADDA and source-only; four digit tasks, seeds 0 and 1, one thread
# per cell, two cells at a time. From the repository root, with the .venv active:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/digits-cpu-long/run.sh [OUT]
# Table: OUT/results.md (-> results.md here). About 2 hours on 2 cores (cells of 3 to 11 minutes).
set -u
out=${1:-benchmarks/runs/digits-cpu_long}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# s[oh]*: source_only and shot (SHOT starts from the source_only cell of its task and seed)
for glob in '*/mcc_*/*' '*/s[oh]*/*' '*/adda/*'; do
  da-toolkit compare benchmarks/digits.yaml --profile cpu_long --seeds 0,1 --only "$glob" -o "$out" --jobs 2 ||
    echo "$glob: not every cell finished"
done
da-toolkit compare benchmarks/digits.yaml --profile cpu_long --seeds 0,1 --finished -o "$out"  # the cells tried
cp "$out"/results.{md,csv,json,png} benchmarks/results/digits-cpu-long/
