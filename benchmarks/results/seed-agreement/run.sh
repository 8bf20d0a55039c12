#!/bin/bash
# The digits grid's cpu profile on one machine, seeds 0 and 1, one thread per cell, two cells at a time, with every
# run's predictions of the agreement sample: the recommendation study with seed_agreement beside the validators
# (issue 25). From the repository root, with the .venv active:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/seed-agreement/run.sh [OUT] [METHOD ...]
# Default methods: the list below (source_only and shot first: shot adapts the source_only cell). Table:
# OUT/results.md (-> results.md here). Cells made before 2026-12-05 (without the agreement sample) get it from
# `da-toolkit rescore` (it needs their classifier.pt).
set -u
out=${1:-benchmarks/runs/seed-agreement}
shift || true
methods=${*:-source_only shot mcc mcc_shot mcc_fixmatch adda_fixmatch dann cdan dann_mcc bnm adda jan bsp mdd mcd afn dan coral mean_teacher
  fixmatch dirt_t dann_dirt_t adabn cyclegan cyclegan_dann cyclegan_adda}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for method in $methods; do
  da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --only "*/$method/*" -o "$out" --jobs 2 ||
    echo "$method: not every cell finished"
done
da-toolkit rescore "$out"/runs/*/*/seed* | grep -v "nothing to add"
da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --finished -o "$out"
cp "$out"/results.{md,csv,json,png} benchmarks/results/seed-agreement/
