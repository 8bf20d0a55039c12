#!/bin/bash
# MCC then SHOT (mcc_shot, issue 25) on the four digit tasks at today's defaults (the digits grid's cpu profile),
# seeds 0 and 1, with source-only and SHOT from it beside it, one thread per cell, two cells at a time. From the repository root, with the .venv active:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/mcc-shot/run.sh [OUT] [NAME=FOLDER ...]
# Table: OUT/results.md (-> results.md here). Each NAME=FOLDER (a folder of finished cells, e.g. the OUT of
# mcc-fixmatch/run.sh, or its combined/) also makes the recommendation over the union of FOLDER's cells and this
# folder's (OUT/NAME/results.md -> NAME.md here; cells of this folder win where both have one).
set -u
out=${1:-benchmarks/runs/mcc-shot}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
here=benchmarks/results/mcc-shot
for method in mcc_shot source_only shot; do  # shot adapts the source_only cell of its task and seed
  da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --only "*/$method/*" -o "$out" --jobs 2 ||
    echo "$method: not every cell finished"
done
da-toolkit rescore "$out"/runs/*/*/seed* | grep -v "nothing to add"  # cells made before the agreement sample
da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --finished -o "$out"
cp "$out"/results.{md,csv,json,png} "$here/"
for pair in "${@:2}"; do
  name=${pair%%=*} folder=${pair#*=}
  rm -rf "${out:?}/$name"
  bash benchmarks/merge_cells.sh "$out/$name" "$folder" "$out"  # this folder's cells win
  # runs from before the agreement sample (2026-12-05): their returned models' predictions of it, for seed_agreement
  da-toolkit rescore "$out/$name"/runs/*/*/seed* | grep -v "nothing to add" ||
    echo "$name: some cells not rescored (e.g. without classifier.pt): no seed agreement for them"
  da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --finished -o "$out/$name"
  for ext in md csv json png; do cp "$out/$name/results.$ext" "$here/$name.$ext"; done
done
