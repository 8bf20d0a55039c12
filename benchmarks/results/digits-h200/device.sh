#!/bin/bash
# The digit grids at their cpu profiles' budgets on a lent GPU machine (one H200, 16 CPU cores) through the
# device tool, from the repository root there, with the development machine's data and fonts in .carry/
# (benchmarks/device_setup.sh):
#   bash benchmarks/results/digits-h200/device.sh SECONDS
# (PROFILE: the digits grid's profile, default cpu, TLlib's optimiser protocol since 2026-12-04; results.md's cells ran
# with it, partly as the cpu profile while it was briefly the digit default, commit fcffba3, partly as the then
# cpu_tllib_optimiser profile.)
# Runs, one thread per cell: benchmarks/digits.yaml at PROFILE (every method, 4 tasks, 2 seeds, 216 cells; 12 at a
# time) and beside it benchmarks/scarce_labels.yaml, then scarce_labels_self_training.yaml (3 at a time), then
# dann-dtn's cpu32 runs (run_cpu32.sh, one chain per seed); with DIGITS_ONLY=1, the digits grid alone,
# JOBS cells at a time (default 12). SECONDS bounds the whole script; a second call on
# the still-warm machine continues where the first stopped (finished cells are not run again). What finished
# comes back in $OUT as <grid>.tgz (metrics, recipes, logs; not checkpoints), tabled on the development
# machine with `da-toolkit compare benchmarks/<grid>.yaml --profile cpu --finished -o <the unpacked folder>`.
# The first cell runs alone and stops the script on a failure, so that a broken set-up costs seconds.
set -u
budget=${1:?SECONDS}
begin=$(date +%s)
source benchmarks/device_setup.sh   # data, fonts, versions, the da-toolkit command; defines pack
left() { echo $(( budget - ($(date +%s) - begin) - 30 )); }
grid() {  # GRID JOBS [GLOB]: the cpu profile's cells of benchmarks/GRID.yaml in /tmp/grids/GRID
  local profile=cpu; [ "$1" = digits ] && profile=${PROFILE:-cpu}
  timeout --signal=TERM --kill-after=20 "$(left)" python3 -m da_toolkit compare "benchmarks/$1.yaml" --profile "$profile" \
    --jobs "$2" ${3:+--only "$3"} -o "/tmp/grids/$1" >>"$out/$1.log" 2>&1
  local rc=$?
  echo "$1 ${3:-}: rc $rc after $(( $(date +%s) - begin )) s; cells done: $(ls /tmp/grids/$1/runs/*/*/seed*/metrics.json 2>/dev/null | wc -l)"
  return $rc
}

if ! grid digits 1 'mnist2usps/source_only/seed0'; then
  echo "FIRST CELL FAILED"; tail -40 "$out/digits.log"; tail -40 /tmp/grids/digits/runs/*/*/seed0/cell.log; exit 1
fi
grid digits "${JOBS:-12}" &
[ -n "${DIGITS_ONLY:-}" ] || {
  grid scarce_labels 3
  grid scarce_labels_self_training 3
  for seed in 0 1 2; do
    SEEDS=$seed timeout "$(left)" bash benchmarks/results/dann-dtn/run_cpu32.sh >>"$out/cpu32.log" 2>&1 &
  done
  wait
  echo "cpu32: after $(( $(date +%s) - begin )) s; runs done: $(ls benchmarks/runs/cpu32/*/*/seed*/metrics.json 2>/dev/null | wc -l)"
} &
wait
for dir in /tmp/grids/*; do pack "$dir"; done
[ -d benchmarks/runs/cpu32 ] && pack benchmarks/runs/cpu32
ls -la "$out"
