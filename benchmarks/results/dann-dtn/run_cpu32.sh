#!/bin/bash
# The cpu32 profile of issue 18: DTN at 32x32 colour, 1,000 iterations of batch 64, 10,000 source
# images, source_only vs dann, seeds 0-2, one thread, one run at a time. Cells land in
# benchmarks/runs/cpu32/<task>/<method>/seed<s>/ (git-ignored); summarize.py writes results.md.
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/dann-dtn/run_cpu32.sh
set -u
export OMP_NUM_THREADS=1
budget=(train.iterations=1000 data.source.limit=10000)
blend=(data.target.name=mnist-blend data.target_test.name=mnist-blend)
for seed in ${SEEDS:-0 1 2}; do
  for task in syndigits2ucidigits syndigits2mnist mnist2mnistblend; do
    for method in source_only dann; do
      out=benchmarks/runs/cpu32/$task/$method/seed$seed
      [ -f $out/metrics.json ] && continue
      if [ $task = mnist2mnistblend ]; then
        recipe=recipes/mnist2mnistm_$method.yaml; extra=("${blend[@]}")
      else
        recipe=recipes/${task}_$method.yaml; extra=()
      fi
      da-toolkit run $recipe "${budget[@]}" "${extra[@]}" seed=$seed -o $out --overwrite --quiet \
        || echo "FAILED $task $method $seed"
    done
  done
done
