#!/bin/bash
# The digits sweep (benchmarks/digits_sweep.yaml, issue 27) at the cpu profile: DANN, CDAN, MCC and ADDA with 8
# sampled configurations each beside their recipes' own values, source-only as the no-harm baseline; one thread
# per cell. Run from the repository root:
#   DA_TOOLKIT_DATA=../shared/data [TABLE_GLOB=...] bash benchmarks/results/digits-sweep-cpu/run.sh [OUT] [GLOB...]
# Cells land in OUT/runs/<task>/<method>[@i]/seed<s> (default benchmarks/runs/digits_sweep-cpu); finished cells
# are skipped, so the script continues an interrupted sweep. GLOBs (default: every cell, seed 0 first) choose
# the cells, as compare's --only. The session that made results.md ran 'mnist2usps/*/seed0' and
# 'usps2mnist/*/seed0' only (the time it had; see results.md), with the recipes' own cells (source_only, dann,
# cdan, mcc, adda) copied from the digits cpu grid's run directories of the same code (their recipes are
# identical, which compare checks before it skips a cell), and TABLE_GLOB='*/*/seed0': the table of the cells of
# seed 0 only, so that every configuration has the same seeds (the copied recipes' cells also had seed 1).
set -u
export OMP_NUM_THREADS=1
out=${1:-benchmarks/runs/digits_sweep-cpu}
shift || true
globs=("$@")
[ ${#globs[@]} -gt 0 ] || globs=('*/*/seed0' '*/*/seed1')
for glob in "${globs[@]}"; do
  da-toolkit compare benchmarks/digits_sweep.yaml --profile cpu --jobs 1 --only "$glob" -o "$out" || echo "FAILED $glob"
done
# the validators added after some cells ran (bnm, class_ami, target_knn): scores of each finished run's returned model
da-toolkit rescore $(dirname "$out"/runs/*/*/seed*/metrics.json) | grep -v "nothing to add"
da-toolkit compare benchmarks/digits_sweep.yaml --profile cpu --finished --only "${TABLE_GLOB:-*/*/*}" -o "$out"
