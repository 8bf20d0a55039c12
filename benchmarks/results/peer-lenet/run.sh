#!/bin/bash
# Ours against Transfer-Learning-Library (TLlib) at equal budget (issue 28): MNIST->USPS and USPS->MNIST,
# LeNet 28x28 grey, 1,000 iterations of batch 128, seeds 0-2, one thread per process, two processes at a
# time. TLlib runs unmodified with its own `# Digits` flags (../shared/peers/tllib/README.md: set-up). Our
# DANN, CDAN, MCC and source-only also run with TLlib's optimiser protocol (--peer-optimiser) and with that protocol and its
# per-task learning rate (--peer-protocol). A finished run is not run again. Run from the repository root,
# with the project's .venv active (the script imports da_toolkit):
#   DA_TOOLKIT_DATA=../shared/data TLLIB=/tmp/tllib PEER_PYTHONPATH=/work/peerlibs \
#     bash benchmarks/results/peer-lenet/run.sh [OUT] [METHODS] [TABLE] [--finished]
# results.md is the table of the default methods; results-more.md that of
#     bash benchmarks/results/peer-lenet/run.sh benchmarks/runs/peer-more adda,bsp,afn,mcd,dan results-more.md \
#       --peer-optimiser adda,bsp,afn,mcd,dan --peer-protocol afn,bsp --peer-hyper afn
# (later flags override the ones below), stopped for time and tabled with the same command and --finished
# (launches nothing; unfinished runs are gaps). results-backbone.md, ours on TLlib's own LeNet (lenet_fc500) with
# its optimiser beside our defaults and TLlib, is peer_side_by_side.py's table of
#     python benchmarks/peer_side_by_side.py --methods dann,source_only --tasks M2U,U2M --seeds 0,1,2 --peer-all dann \
#       --peer-backbone dann,source_only --out benchmarks/runs/peer-backbone
# results-separate.md, the joint-training methods at today's default (each domain's batch on its own, 2026-12-05), is
#     python benchmarks/peer_side_by_side.py --methods dann,cdan,bsp,mcc,mdd --tasks M2U,U2M --seeds 0,1,2 \
#       --out benchmarks/runs/peer-separate
# results-rest.md, BSP at equal budget (TLlib without its 3 epochs of source pre-training), DAN and JAN at today's
# defaults, is the last command's table of these four (BSP's ours and TLlib-as-it-ships runs: peer-separate's, copied
# into the folder; TLlib's DAN, about 20 min a run here, not run again: results-more.md has it):
#     python benchmarks/peer_side_by_side.py --methods bsp --tasks M2U,U2M --seeds 0,1,2 --peer-equal-budget bsp \
#       --out benchmarks/runs/peer-rest
#     python benchmarks/peer_side_by_side.py --methods dan --tasks M2U,U2M --seeds 0,1,2 --ours-only --out benchmarks/runs/peer-rest
#     python benchmarks/peer_side_by_side.py --methods jan --tasks M2U,U2M --seeds 0,1,2 --out benchmarks/runs/peer-rest
#     python benchmarks/peer_side_by_side.py --methods bsp,dan,jan --tasks M2U,U2M --seeds 0,1,2 --peer-equal-budget bsp \
#       --finished --out benchmarks/runs/peer-rest
# results-lr.md, each method's lr0 picked per task by its seeds' agreement (no target label) among 0.01, 0.03 and 0.1,
# is the table of (ours at lr0 0.01: the runs of results-separate.md, results-rest.md and results-afn.md, copied into
# OUT/ours; TLlib: those tables' peer runs, copied into OUT/peer; TLlib's DAN, about 20 min a run, not run again)
#     python benchmarks/peer_side_by_side.py --methods dann,cdan,bsp,dan --tasks U2M,M2U --lr-by-agreement dann,cdan,bsp,dan \
#       --ours-only --out OUT
#     python benchmarks/peer_side_by_side.py --methods afn,source_only --tasks U2M,M2U --lr-by-agreement afn,source_only --out OUT
#     python benchmarks/peer_side_by_side.py --methods mcc,mdd --tasks U2M,M2U --lr-by-agreement mcc,mdd --ours-only --out OUT
#     python benchmarks/peer_side_by_side.py --methods dann,cdan,bsp,dan,afn,mcc,mdd,source_only --tasks M2U,U2M \
#       --lr-by-agreement dann,cdan,bsp,dan,afn,mcc,mdd,source_only --finished --out OUT
set -u
out=${1:-benchmarks/runs/peer}
methods=${2:-dann,cdan,mcc,source_only,mdd}  # also: jan, dan, bsp, adda, afn, mcd, fixmatch (TLlib's JAN: about 18 min a run here)
python benchmarks/peer_side_by_side.py --methods "$methods" --peer-optimiser dann,cdan,mcc,source_only --peer-protocol dann,cdan,mcc,source_only \
  --tasks M2U,U2M --seeds 0,1,2 --out "$out" "${@:4}"
cp "$out/results.md" "benchmarks/results/peer-lenet/${3:-results.md}"
