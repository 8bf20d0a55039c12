#!/bin/bash
# The digits sweep (benchmarks/digits_sweep.yaml, issue 27) at its cpu profile's budget, run on a lent GPU machine
# (one H200, 16 CPU cores) through the device tool, 16 cells at a time. From the repository root there:
#   bash benchmarks/results/digits-sweep-h200/device.sh SECONDS [GLOB...]
# with the development machine's data and fonts carried in .carry/ (mnist/*.gz, usps*.bz2, fonts.tgz: this
# machine has no ../shared/data, and syndigits renders the fonts installed, so they are those of the
# development machine where the other digit grids ran). SECONDS bounds the whole script; what finished comes
# back in $OUT (metrics, recipes and logs of every cell, not its checkpoints) and is tabled with
#   da-toolkit compare benchmarks/digits_sweep.yaml --profile cpu --finished -o <the unpacked folder>
# A smoke pass (the smoke profile, configuration 0 of each method, every task) runs first and stops the script
# on a failure, so that a broken set-up costs seconds.
set -u
budget=${1:?SECONDS}
shift
globs=("$@")
[ ${#globs[@]} -gt 0 ] || globs=('*/*/seed0' '*/*/seed1')
begin=$(date +%s)
source benchmarks/device_setup.sh   # data, fonts, versions; defines pack

if ! timeout 240 python3 -m da_toolkit compare benchmarks/digits_sweep.yaml --profile smoke --jobs 16 \
       --only '*/*@0/seed0' -o /tmp/smoke >"$out/smoke.log" 2>&1; then
  echo "SMOKE FAILED"; tail -30 "$out/smoke.log"; tail -40 /tmp/smoke/runs/*/*/seed0/cell.log 2>/dev/null | tail -80
  exit 1
fi
tail -3 "$out/smoke.log"
echo "set-up and smoke: $(( $(date +%s) - begin )) s"

for glob in "${globs[@]}"; do
  left=$(( budget - ($(date +%s) - begin) - 25 ))
  [ "$left" -gt 20 ] || break
  echo "=== $glob: ${left} s left"
  timeout --signal=TERM --kill-after=20 "$left" python3 -m da_toolkit compare benchmarks/digits_sweep.yaml \
    --profile cpu --jobs 16 --only "$glob" -o /tmp/sweep >>"$out/sweep.log" 2>&1
  echo "rc $? after $(( $(date +%s) - begin )) s; cells done: $(ls /tmp/sweep/runs/*/*/seed*/metrics.json 2>/dev/null | wc -l)"
done
pack /tmp/sweep
ls -la "$out"
