#!/bin/bash
# The joint-training family on the four digit tasks with each domain's batch through the classifier on its own
# (`feature.domain_batches: separate`, the default since 2026-12-05: the `cpu` profile) and with one mixed
# batch of both domains (the default before: the `cpu_joint_batches` profile), seeds 0 and 1, one thread per
# cell, two cells at a time. Source-only and the CycleGAN cells that CycleGAN+DANN reuses run with them, so
# each folder's recommendation has its baseline. From the repository root, with the .venv active:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/joint-domain-batches/run.sh [OUT]
# Tables: OUT/separate/results.md (-> results.md here) and OUT/joint/results.md (-> joint.md here).
set -u
out=${1:-benchmarks/runs/joint-domain-batches}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mixed_until_then="dann cdan mcc dann_mcc bsp jan bnm mdd"  # DAN, CORAL and AFN: separate since 42505d8 (README)
for method in source_only $mixed_until_then dan coral afn dann_dirt_t; do
  da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --only "*/$method/*" -o "$out/separate" --jobs 2 ||
    echo "$method: not every cell finished"
done
da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --only "syndigits2mnist/cyclegan*" \
  -o "$out/separate" --jobs 2 || echo "cyclegan_dann: not every cell finished"
for method in source_only $mixed_until_then; do
  da-toolkit compare benchmarks/digits.yaml --profile cpu_joint_batches --seeds 0,1 --only "*/$method/*" \
    -o "$out/joint" --jobs 2 || echo "$method (one mixed batch): not every cell finished"
done
for side in separate joint; do
  da-toolkit compare benchmarks/digits.yaml --profile "$([ $side = separate ] && echo cpu || echo cpu_joint_batches)" \
    --seeds 0,1 --finished -o "$out/$side"
done
cp "$out"/separate/results.{md,csv,json,png} benchmarks/results/joint-domain-batches/
for ext in md csv json; do cp "$out/joint/results.$ext" "benchmarks/results/joint-domain-batches/joint.$ext"; done
python benchmarks/results/before_after.py benchmarks/results/joint-domain-batches/joint.json \
  benchmarks/results/joint-domain-batches/results.json
