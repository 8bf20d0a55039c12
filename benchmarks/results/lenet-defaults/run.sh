#!/bin/bash
# The digits grid's cpu profile, seeds 0 and 1, at the LeNet defaults (README "Defaults per backbone"): the methods
# whose LeNet lr0 changed (DANN 0.1; CDAN, BSP, MDD 0.03; CycleGAN+DANN and DANN->DIRT-T inherit DANN's) run here; the
# other 20 methods' cells, which the defaults did not change (DANN+MCC keeps 0.01), are linked in from GRID, the output
# folder of seed-agreement/run.sh (its cells of the moved methods are not linked). One thread per cell, two cells at
# a time. From the repository root, with the .venv active:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/lenet-defaults/run.sh [OUT] [GRID]
# Without GRID's cells, `seed-agreement/run.sh OUT` on today's code makes the same table (every cell run).
# Table: OUT/results.md (-> results.md here); before -> after of the moved methods: before_after.md.
set -u
out=${1:-benchmarks/runs/lenet-defaults}
grid=${2:-benchmarks/runs/seed-agreement}
moved="dann cdan mdd bsp cyclegan_dann dann_dirt_t"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for task_dir in "$grid"/runs/*/; do
  task=$(basename "$task_dir")
  mkdir -p "$out/runs/$task"
  for cell in "$task_dir"*/; do
    method=$(basename "$cell")
    if [[ " $moved " == *" $method "* ]] || [ -e "$out/runs/$task/$method" ]; then continue; fi
    # SHOT's cells name their source_only cell's folder: both copied, so that the path still names a cell of OUT
    # (a link would resolve to GRID's); the others linked
    if [ "$method" = shot ] || [ "$method" = source_only ]; then cp -r "$cell" "$out/runs/$task/$method"
    else ln -s "$(realpath "$cell")" "$out/runs/$task/$method"; fi
  done
done
for method in $moved; do  # cyclegan_dann reuses the linked cyclegan cells' translators
  da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --only "*/$method/*" -o "$out" --jobs 2 ||
    echo "$method: not every cell finished"
done
da-toolkit compare benchmarks/digits.yaml --profile cpu --seeds 0,1 --finished -o "$out"
cp "$out"/results.{md,csv,json,png} benchmarks/results/lenet-defaults/
python benchmarks/results/before_after.py benchmarks/results/seed-agreement/results.json "$out"/results.json \
  > benchmarks/results/lenet-defaults/before_after.md
