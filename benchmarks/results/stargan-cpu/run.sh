#!/bin/bash
# Issue 26's grid rows at the cpu profile: the digits grid's stargan, stargan_dann and stargan_adda cells (one
# StarGAN of the four digit domains per seed serves all four tasks), the multi-source file (syndigits + USPS ->
# MNIST beside each source alone), the translation grids, and the translators' cost. One thread per cell,
# a compare per seed side by side (2 cores). Run from the repository root:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/stargan-cpu/run.sh [OUT]
# Cells land in OUT/digits-cpu/runs/<task>/<method>/seed<s> and OUT/multi-source-cpu/runs/... (default
# OUT: benchmarks/runs); finished cells are skipped, so the script continues where it stopped.
set -u
export OMP_NUM_THREADS=1
out=${1:-benchmarks/runs}
here=benchmarks/results/stargan-cpu
mkdir -p "$out"
for seed in 0 1; do
  da-toolkit compare benchmarks/digits.yaml --profile cpu --jobs 1 --only "*/stargan*/seed$seed" \
    -o "$out/digits-cpu" > "$out/stargan_seed$seed.log" 2>&1 || echo "FAILED digits seed $seed" &
done
wait
# Multi-source: syndigits + USPS -> MNIST beside each source alone, a compare per seed. The single-source
# cells train their own StarGAN (the same recipe as the digits grid's cells of those tasks, so the same
# figures: a reproduction check); the syndigits+usps cells another (its data lists two sources).
for seed in 0 1; do
  da-toolkit compare benchmarks/multi_source.yaml --profile cpu --jobs 1 --only "*/*/seed$seed" \
    -o "$out/multi-source-cpu" > "$out/multi_source_seed$seed.log" 2>&1 || echo "FAILED multi-source seed $seed" &
done
wait
# the tables of the cells that finished: the stargan rows of the digits grid, and the multi-source file
da-toolkit compare benchmarks/digits.yaml --profile cpu --finished --only '*/stargan*/*' -o "$out/digits-cpu"
da-toolkit compare benchmarks/multi_source.yaml --profile cpu --finished -o "$out/multi-source-cpu"
cp "$out"/digits-cpu/{results.md,results.csv,results.json,results.png,selection_*.png} "$here"/
mkdir -p "$here/multi-source"
cp "$out"/multi-source-cpu/{results.md,results.csv,results.json,results.png,selection_*.png} "$here/multi-source"/
python benchmarks/translators.py "$out/digits-cpu" --method stargan | tee "$here/translators.md"
for task in mnist2usps usps2mnist syndigits2mnist syndigits2ucidigits; do
  for seed in 0 1; do
    python benchmarks/translation_grid.py "$out/digits-cpu/runs/$task/stargan/seed$seed" "$here/${task}_seed$seed.png" --count 10
  done
done
python benchmarks/translator_cost.py --iterations 20 --rounds 3 | tee "$here/translator_cost.txt"
