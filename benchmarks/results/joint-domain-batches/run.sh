#!/bin/bash
# AFN, Deep CORAL and DAN with each domain's batch through the classifier on its own (`feature.domain_batches:
# separate`, their recipes' value since 2026-12-05), on the four digit tasks at the digits grid's cpu profile,
# seeds 0 and 1, one thread per cell, two cells at a time. The "one mixed batch" column is the same command at
# commit ee60cef (before the key existed) for MNIST<->USPS, and the cells of digits-cpu-syndigits-v2/ for the
# syndigits tasks. From the repository root, with the .venv active:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/joint-domain-batches/run.sh [OUT]
set -u
out=${1:-benchmarks/runs/joint-domain-batches}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for method in afn coral dan; do
  da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --only "*/$method/*" -o "$out" --jobs 2 ||
    echo "$method: not every cell finished"
done
da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --finished -o "$out" &&
  cp "$out"/results.{md,csv,json} benchmarks/results/joint-domain-batches/
