#!/bin/bash
# Our DANN, CDAN, MCC and DANN+MCC against Transfer-Learning-Library's figures at its budget:
# MNIST->USPS, LeNet, 1,000 iterations of batch 128, one thread, seed 0 (issue 9). The last two runs
# are DANN with the peer's optimiser protocol (Nesterov, lr (1 + 0.001 i)^-0.75, weight decay 1e-3),
# with and without its batch-norm discriminator. Runs land in ${OUT:-benchmarks/runs/peer}/<name>.
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/peer_side_by_side.sh
set -u
export OMP_NUM_THREADS=1
out=${OUT:-benchmarks/runs/peer}
budget=(train.iterations=1000 train.batch_size=128)
peer=(train.nesterov=true train.lr_schedule=inverse train.weight_decay=0.001)
run() {
  name=$1; shift
  da-toolkit run "$@" "${budget[@]}" -o "$out/$name" --overwrite --quiet || echo "FAILED $name"
}
run dann recipes/mnist2usps_dann.yaml
run cdan recipes/mnist2usps_cdan.yaml
run mcc recipes/mnist2usps_mcc.yaml
run dann_mcc recipes/mnist2usps_dann_mcc.yaml
run dann_peer_optimiser recipes/mnist2usps_dann.yaml "${peer[@]}"
run dann_peer_protocol recipes/mnist2usps_dann.yaml "${peer[@]}" feature.discriminator_batch_norm=true \
  feature.discriminator_dropout=0
python - "$out" <<'PY'
import json, pathlib, sys
for run in sorted(pathlib.Path(sys.argv[1]).iterdir()):
    m = json.loads((run / "metrics.json").read_text())
    print(f"{run.name:22s} target {100 * m['target_accuracy']:.2f}%  source {100 * m['source_accuracy']:.2f}%  {m['wall_time_s']:.0f} s")
PY
