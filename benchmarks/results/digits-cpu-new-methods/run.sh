#!/bin/bash
# The digits cpu grid's MNIST<->USPS cells of the methods added by issues 25 and 28 (and the methods of the
# committed digits-cpu table, re-run on the same code for the recommendation), 2 seeds, one thread per cell,
# then the table of the cells that finished (`--finished`). Run from the repository root:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/digits-cpu-new-methods/run.sh [OUT]
# Cells land in OUT/runs/<task>/<method>/seed<s> (default benchmarks/runs/digits-cpu); finished cells are
# skipped, so the script continues an interrupted grid. The session that made results.md ran the same globs
# in two chains of one job each (2 cores) and stopped at its time limit: the methods missing from results.md
# are the ones it did not reach.
set -u
export OMP_NUM_THREADS=1
out=${1:-benchmarks/runs/digits-cpu}
for method in source_only dann cdan mcc dann_mcc adda dan jan shot fixmatch bnm bsp mean_teacher mdd adabn coral afn mcd; do
  for task in mnist2usps usps2mnist; do
    da-toolkit compare benchmarks/digits.yaml --profile cpu --jobs 1 --only "$task/$method/*" -o "$out" || echo "FAILED $task/$method"
  done
done
# the validators added after these cells ran (bnm, class_ami, target_knn; issue 27): scores of each finished
# run's returned model, without retraining (rescored.json; the stored scores are checked to reproduce)
da-toolkit rescore $(dirname "$out"/runs/[mu][ns]*/*/seed*/metrics.json)
da-toolkit compare benchmarks/digits.yaml --profile cpu --finished --only '[mu][ns]*/*/*' -o "$out"
