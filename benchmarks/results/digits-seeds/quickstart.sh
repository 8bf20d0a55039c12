#!/bin/bash
# The quickstart's candidates over seeds 0-2, one thread per run, two runs at a time: source-only
# (recipes/quickstart_source_only.yaml), SHOT from that run (recipes/quickstart.yaml), and MCC (the quickstart's
# former method: its recipe with quickstart_source_only's classifier and budget) at today's digit optimiser and at
# the former one. From the repository root, with the project's .venv active:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/digits-seeds/quickstart.sh [OUT]
# prints one markdown row per method and optimiser: target test accuracy (%) per seed.
set -u
out=${1:-benchmarks/runs/quickstart-seeds}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
quick="data.image_size=28 data.channels=1 classifier.backbone=lenet train.iterations=1000"
former="train.nesterov=false train.weight_decay=0.0005 train.lr_schedule=anneal"
seed_runs() {  # $1: seed
  local s=$1 d=$out/seed$1
  da-toolkit run recipes/quickstart_source_only.yaml seed="$s" -o "$d/source_only" --overwrite -q
  da-toolkit run recipes/quickstart.yaml seed="$s" feature.source_checkpoint="$d/source_only" -o "$d/shot" --overwrite -q
  da-toolkit run recipes/syndigits2ucidigits_mcc.yaml seed="$s" $quick -o "$d/mcc" --overwrite -q
  da-toolkit run recipes/syndigits2ucidigits_mcc.yaml seed="$s" $quick $former -o "$d/mcc_former_optimiser" --overwrite -q
}
seed_runs 0 > "$out.0.log" 2>&1 & seed_runs 1 > "$out.1.log" 2>&1; wait
seed_runs 2 > "$out.2.log" 2>&1
python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| run | seed 0 | seed 1 | seed 2 |\n|---|---|---|---|")
for run in ("source_only", "shot", "mcc", "mcc_former_optimiser"):
    accs = [json.loads((out / f"seed{s}" / run / "metrics.json").read_text())["target_accuracy"] for s in range(3)]
    print(f"| {run} | " + " | ".join(f"{100 * a:.2f}" for a in accs) + " |")
PY
