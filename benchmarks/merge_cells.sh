#!/bin/bash
# Copy the finished cells (those with metrics.json) of compare folders into one, for a recommendation over
# their union: bash benchmarks/merge_cells.sh DEST SOURCE... (DEST/runs/<task>/<method>/seed<s>; a later
# SOURCE's cell replaces an earlier one's). CycleGAN cells are left out: they name their translator's cell by
# its path, so they do not move.
set -u
dest=$1
shift
for folder in "$@"; do
  for cell in "$folder"/runs/*/*/seed*; do
    [ -f "$cell/metrics.json" ] || continue
    case $cell in */cyclegan*) continue ;; esac
    into="$dest/runs/${cell##*/runs/}"
    rm -rf "$into" && mkdir -p "$(dirname "$into")" && cp -r "$cell" "$into"
  done
done
