#!/bin/bash
# The recommendation study on the runs of our side of the TLlib side-by-side (peer_side_by_side.py: LeNet 28x28 grey,
# batch 128, 1,000 iterations, seeds 0-2, MNIST->USPS and USPS->MNIST, seven alignment methods, no source-only):
# a second grid for seed agreement, with three seeds a method. From the repository root, with the .venv active:
#   DA_TOOLKIT_DATA=../shared/data bash benchmarks/results/seed-agreement/peer_runs.sh [OUT]
# Our runs only (--ours-only; TLlib's are not needed here), then `da-toolkit rescore` (the agreement sample's
# predictions for runs made before it) and `da-toolkit show -v` -> peer-runs.md here.
set -u
out=${1:-benchmarks/runs/peer}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
python benchmarks/peer_side_by_side.py --methods dann,cdan,bsp,mcc,mdd,dan,jan --tasks M2U,U2M --seeds 0,1,2 \
  --iterations 1000 --ours-only --out "$out" > /dev/null
da-toolkit rescore "$out"/ours/{dann,cdan,bsp,mcc,mdd,dan,jan}_* | grep -v "nothing to add"
shown=$(da-toolkit show -v "$out"/ours/{dann,cdan,bsp,mcc,mdd,dan,jan}_* | sed "s#$out/##")
{
  echo "# The recommendation on the side-by-side runs (seed agreement's second grid)"
  echo
  echo "Written by \`bash benchmarks/results/seed-agreement/peer_runs.sh\`: \`da-toolkit show -v\` of our runs of"
  echo "\`peer_side_by_side.py --methods dann,cdan,bsp,mcc,mdd,dan,jan --tasks M2U,U2M --seeds 0,1,2 --iterations 1000\`."
  echo
  echo '```'
  sed '/^## Recommendation/,$d' <<< "$shown"
  echo '```'
  echo
  sed -n '/^## Recommendation/,$p' <<< "$shown"
} > benchmarks/results/seed-agreement/peer-runs.md
