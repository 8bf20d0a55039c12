"""Our methods against Transfer-Learning-Library's (TLlib) on the same digit task, budget, batch and
backbone, several seeds, one thread per process, one table (issue 28).

Both sides: LeNet on 28×28 grey images, batch 128, the same number of iterations, each library with
its own hyper-parameters for the method (ours: the recipe's defaults; TLlib: its `# Digits` flags from
examples/domain_adaptation/image_classification/<method>.sh). TLlib runs unmodified through
../shared/peers/tllib/launch.py (its README says how to set it up); its last-epoch accuracy is
compared (TLlib's `best_acc` picks the epoch by target test accuracy, which we never do).

    DA_TOOLKIT_DATA=../shared/data TLLIB=/tmp/tllib PEER_PYTHONPATH=/work/peerlibs \\
        python benchmarks/peer_side_by_side.py --methods dann,cdan --tasks M2U,U2M --seeds 0,1,2

`--peer-optimiser dann,cdan` also runs those methods of ours with TLlib's optimiser protocol
(`PEER_OPTIMISER`: Nesterov, lr0 (1 + 0.001 i)^-0.75 per iteration, weight decay 1e-3; recipe keys,
our digit defaults since 2026-12-04, so that column now repeats ours), in a column of its own; `--peer-protocol dann,cdan` with that protocol and TLlib's
learning rate for the task (its `--lr`, 0.1 on USPS→MNIST); it runs only where that rate is not the
recipe's. A column whose overrides leave the recipe as an earlier column's is that column's runs, not run
again and marked =. `--peer-hyper afn` adds, to that protocol
and lr, TLlib's other digit flags for the method that our recipe keys can express (`PEER_HYPER`): our
method at all of the peer's hyper-parameters.

Each run's directory (ours) or log (TLlib) lands in --out (default benchmarks/runs/peer); a finished
run is not run again, so an interrupted comparison continues where it stopped. The table goes to
<out>/results.md and stdout. Two runs at a time by default (--jobs), each with OMP_NUM_THREADS=1.
`--peer-equal-budget bsp` also runs TLlib's method without the training it does beyond ours (`PEER_EQUAL_BUDGET`: BSP's
three epochs of source-only pre-training before its 1 epoch of adaptation, 4,000 iterations against our 1,000), in a
column of its own beside TLlib's as it ships.
`--lr-by-agreement dann,bsp` runs those methods of ours at every lr0 of `LR_CANDIDATES` (the recipe's own lr0 is
the *ours* column's runs) and shows, in a column of its own, the lr0 whose seeds agree most on the target training
images (the recommendation's seed agreement, da_toolkit/benchmark/recommend.py): a learning rate picked per task
without a target label, at three times the budget of one column (disclosed beside its table).
`--ours-only` launches only our runs (TLlib's columns: its runs already in --out, the others gaps).
`--finished` launches nothing: the table of the runs finished so far, the others gaps ("n of N seeds").
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_KIT = ROOT.parent / "shared" / "peers" / "tllib"  # launch.py, prepare_data.py (../shared beside the repo)
PEER_COMPAT = Path(__file__).resolve().parent / "peer_compat"  # sitecustomize.py: TLlib under today's Pillow

TASKS = {"M2U": ("mnist2usps", "MNIST", "USPS"), "U2M": ("usps2mnist", "USPS", "MNIST")}
DIGIT_FLAGS = ["--train-resizing", "res.", "--val-resizing", "res.", "--resize-size", "28", "--no-hflip",
               "--norm-mean", "0.5", "--norm-std", "0.5", "-a", "lenet", "--no-pool", "-b", "128", "--scratch"]
# TLlib's `# Digits` flags per method and task beyond DIGIT_FLAGS (its <method>.sh; lr per task)
PEER_FLAGS = {
    "source_only": ("erm", {"M2U": ["--lr", "0.01"], "U2M": ["--lr", "0.1"]}),
    "dann": ("dann", {"M2U": ["--lr", "0.01"], "U2M": ["--lr", "0.1"]}),
    "cdan": ("cdan", {"M2U": ["--lr", "0.01"], "U2M": ["--lr", "0.1"]}),
    "mcc": ("mcc", {"M2U": ["--lr", "0.01"], "U2M": ["--lr", "0.1"]}),
    "adda": ("adda", {"M2U": ["--lr", "0.01"], "U2M": ["--lr", "0.1"]}),
    "mdd": ("mdd", {"M2U": ["--lr", "0.01"], "U2M": ["--lr", "0.01"]}),
    "dan": ("dan", {"M2U": ["--lr", "0.01"], "U2M": ["--lr", "0.1"]}),
    "jan": ("jan", {"M2U": ["--lr", "0.01"], "U2M": ["--lr", "0.1"]}),
    "bsp": ("bsp", {"M2U": ["--lr", "0.01", "--trade-off-bsp", "0.0001"],
                    "U2M": ["--lr", "0.1", "--trade-off-bsp", "0.0001"]}),
    "afn": ("afn", {"M2U": ["-r", "0.3", "--lr", "0.01", "--trade-off-entropy", "0.03"],
                    "U2M": ["-r", "0.1", "--lr", "0.03", "--trade-off-entropy", "0.03"]}),
    "mcd": ("mcd", {"M2U": ["--lr", "0.01", "--trade-off", "0.3", "--trade-off-entropy", "0.03"],
                    "U2M": ["--lr", "0.1", "--trade-off", "0.3", "--trade-off-entropy", "0.03"]}),
    # fixmatch.sh has no `# Digits` lines: the lr of TLlib's other digit runs, our batch for the unlabeled
    # target (-ub; its default 32) and our bottleneck width (its default 1024; 256 in its other digit runs)
    "fixmatch": ("fixmatch", {task: ["--lr", lr, "-ub", "128", "--bottleneck-dim", "256"]
                              for task, lr in (("M2U", "0.01"), ("U2M", "0.1"))}),
}
# TLlib's digit flags beyond --lr as our recipe keys, per method and task (only where they differ from our defaults)
PEER_HYPER = {
    # TLlib's DomainDiscriminator: batch norm, no dropout; its dann.py: one batch of both domains
    "dann": {task: ["feature.discriminator_batch_norm=true", "feature.discriminator_dropout=0",
                    "feature.domain_batches=joint"] for task in ("M2U", "U2M")},
    "afn": {"M2U": ["feature.norm_increment=0.3", "feature.target_entropy_trade_off=0.03"],  # -r 0.3, entropy 0.03
            "U2M": ["feature.norm_increment=0.1", "feature.target_entropy_trade_off=0.03"]},
}
# TLlib flags that take away the training a method of TLlib does beyond the budget both sides share
PEER_EQUAL_BUDGET = {"bsp": ["--pretrain-epochs", "0"]}  # bsp.py pre-trains on the source for 3 epochs first
OUR_BUDGET = ["classifier.backbone=lenet", "data.image_size=28", "data.channels=1", "train.batch_size=128"]
PEER_OPTIMISER = ["train.nesterov=true", "train.lr_schedule=inverse", "train.weight_decay=0.001"]
PEER_BACKBONE = ["classifier.backbone=lenet_fc500"]  # TLlib's LeNet: fc(500)-ReLU-dropout before the bottleneck


def peer_lr(method: str, task: str) -> list[str]:
    flags = PEER_FLAGS[method][1][task]
    return [f"train.lr={flags[flags.index('--lr') + 1]}"]


# our columns: the folder of their run directories -> (its heading, the overrides it adds to the recipe; None: a
# column that has no runs of the method)
OUR_SIDES = {"ours": ("ours", lambda method, task: []),
             "ours_peer_optimiser": ("ours, peer's optimiser", lambda method, task: PEER_OPTIMISER),
             "ours_peer_protocol": ("ours, peer's optimiser and lr", lambda m, t: [*PEER_OPTIMISER, *peer_lr(m, t)]),
             "ours_peer_hyper": ("ours, all the peer's hyper-parameters",
                                 lambda m, t: [*PEER_OPTIMISER, *peer_lr(m, t), *PEER_HYPER[m][t]]
                                 if m in PEER_HYPER else None),  # None: no such column for the method
             "ours_peer_backbone": ("ours, peer's LeNet and optimiser", lambda m, t: [*PEER_OPTIMISER, *PEER_BACKBONE]),
             "ours_peer_all": ("ours, all the peer's hyper-parameters and its LeNet",
                               lambda m, t: [*PEER_OPTIMISER, *peer_lr(m, t), *PEER_HYPER[m][t], *PEER_BACKBONE]
                               if m in PEER_HYPER else None)}


# --lr-by-agreement: lr0 candidates, the log-spaced grid of benchmarks/lenet_lr.yaml (TLlib's digit lr0 are 0.01 and 0.1)
LR_CANDIDATES = ("0.01", "0.03", "0.1")
LR_SIDES = {f"ours_lr{lr}": (f"ours, lr0 {lr}", lambda m, t, lr=lr: [f"train.lr={lr}"]) for lr in LR_CANDIDATES}
ALL_OURS = {**OUR_SIDES, **LR_SIDES}  # every side whose runs are ours (run_side's order: OUR_SIDES' first)


@functools.cache
def run_side(side: str, method: str, task: str) -> str:
    """The side whose runs `side`'s are: the first of ALL_OURS whose overrides give the same recipe (TLlib's lr
    is ours on MNIST→USPS: there the peer-protocol column repeats the peer-optimiser one; TLlib's optimiser being
    our digit default, the peer-optimiser column repeats ours; lr0 0.01 is the recipes', lr0 0.1 TLlib's on
    USPS→MNIST). Such a column is not run again but shown with =."""
    from da_toolkit.recipe import load_recipe

    recipe = ROOT / "recipes" / f"{TASKS[task][0]}_{method}.yaml"
    sides = list(ALL_OURS)
    overrides = {s: ALL_OURS[s][1](method, task) for s in sides[:sides.index(side) + 1]}
    resolved = {s: load_recipe(recipe, extra).to_dict() for s, extra in overrides.items() if extra is not None}
    return next(s for s in resolved if resolved[s] == resolved[side])


class NotFinished(Exception):
    """A run that has not finished and that --finished does not launch."""


def our_run(side: str, method: str, task: str, seed: int, iterations: int, out: Path, launch: bool = True) -> dict:
    run_dir = out / side / f"{method}_{task}_seed{seed}"
    if not (run_dir / "metrics.json").is_file():
        if not launch:
            raise NotFinished
        recipe = ROOT / "recipes" / f"{TASKS[task][0]}_{method}.yaml"
        extra = [f"feature.adapt_iterations={iterations}"] if method == "adda" else []
        command = [sys.executable, "-m", "da_toolkit", "run", str(recipe), *OUR_BUDGET, f"train.iterations={iterations}",
                   f"seed={seed}", *extra, *ALL_OURS[side][1](method, task), "-o", str(run_dir), "--overwrite", "-q"]
        subprocess.run(command, check=True, env=one_thread(), stdout=subprocess.DEVNULL)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"accuracy": 100 * metrics["target_accuracy"], "seconds": metrics["wall_time_s"],
            "agreement_sample": agreement_sample(run_dir, metrics)}


def agreement_sample(run_dir: Path, metrics: dict) -> dict | None:
    """The run's predictions of the agreement sample (metrics.json, or rescored.json for a run from before
    runs stored them: `da-toolkit rescore` adds them); None without either."""
    sample = (metrics.get("model_selection") or {}).get("agreement_sample")
    rescored = run_dir / "rescored.json"
    if not sample and rescored.is_file():
        sample = json.loads(rescored.read_text()).get("agreement_sample")
    return sample if sample and "predictions" in sample else None


def lr_agreements(results: dict, out: Path, method: str, task: str, seeds: list[int]) -> dict[str, float | None]:
    """lr0 of LR_CANDIDATES -> the agreement of its seeds' models on the agreement sample, for each lr0 every seed
    of which finished with its sample; None for an lr0 a seed of which stopped (`stopped`: the divergence guard, or
    another error, ended it), which is out of the running. An lr0 with a seed not yet run, or running, is absent.
    Label-free: no target label is read."""
    from da_toolkit.benchmark.recommend import agreement

    scores = {}
    for side in LR_SIDES:
        runs = [results.get((run_side(side, method, task), method, task, s)) for s in seeds]
        samples = [run["agreement_sample"] for run in runs if run and run.get("agreement_sample")]
        lr = side.removeprefix("ours_lr")
        if len(samples) == len(seeds) and len({(x["seed"], x["images"]) for x in samples}) == 1:
            scores[lr] = agreement([x["predictions"] for x in samples])
        elif any(not run and stopped(out / run_side(side, method, task) / f"{method}_{task}_seed{s}")
                 for run, s in zip(runs, seeds)):
            scores[lr] = None
    return scores


def stopped(run_dir: Path) -> bool:
    """Whether the run ended without metrics.json: its log's last word (pipeline.py) is why, e.g. the divergence guard."""
    log = run_dir / "log.txt"
    return log.is_file() and "stopped: " in log.read_text()


def lr_by_agreement(results: dict, out: Path, method: str, task: str, seeds: list[int]) -> tuple[str, float] | None:
    """(the lr0 whose seeds agree most of those that did not stop, that agreement); None until every lr0 of
    LR_CANDIDATES has run every seed, or when every lr0 stopped."""
    scores = lr_agreements(results, out, method, task, seeds)
    finished = {lr: score for lr, score in scores.items() if score is not None}
    if len(scores) < len(LR_CANDIDATES) or not finished:
        return None
    best = max(finished, key=finished.get)
    return best, finished[best]


def peer_run(side: str, method: str, task: str, seed: int, iterations: int, out: Path, tllib: Path, data: Path,
             launch: bool = True) -> dict:
    """TLlib's run of `method`: as it ships (side "peer") or without its training beyond ours ("peer_equal_budget")."""
    script, flags = PEER_FLAGS[method]
    _, source, target = TASKS[task]
    equal_budget = PEER_EQUAL_BUDGET[method] if side == "peer_equal_budget" else []
    log = out / side / f"{method}_{task}_seed{seed}.log"
    done = log.with_suffix(".json")
    recovered = peer_accuracy(log.read_text()) if not done.is_file() and log.is_file() else None
    if recovered is not None:  # a complete log without its .json (an older version of this script could not
        done.write_text(json.dumps({"accuracy": recovered, "seconds": None}))  # read it): read, not run again
    if not done.is_file():
        if not launch:
            raise NotFinished
        log.parent.mkdir(parents=True, exist_ok=True)
        env = one_thread()
        env["TLLIB_THREADS"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PEER_COMPAT), str(tllib), os.environ.get("PEER_PYTHONPATH", ""))
                                            if p)
        command = [sys.executable, str(PEER_KIT / "launch.py"), f"{script}.py", str(data), "-d", "Digits",
                   "-s", source, "-t", target, *DIGIT_FLAGS, *flags[task], *equal_budget, "--epochs", "1", "-i", str(iterations),
                   "--seed", str(seed), "--log", str(log.parent / log.stem)]
        began = time.perf_counter()
        with open(log, "w") as handle:  # TLlib's logger closes stdout: it exits 120 after a complete run
            subprocess.run(command, cwd=tllib / "examples/domain_adaptation/image_classification", env=env,
                           stdout=handle, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - began
        accuracy = peer_accuracy(log.read_text())
        if accuracy is None:
            raise RuntimeError(f"TLlib ({side}) {method} {task} seed {seed} failed; see {log}")
        done.write_text(json.dumps({"accuracy": accuracy, "seconds": round(seconds, 1)}))
    return json.loads(done.read_text())


def peer_accuracy(log_text: str) -> float | None:
    """The final test accuracy of a complete TLlib log (None if the run did not end): its last ` * Acc@1 A`
    line, or for MCD's two heads (` * Acc1 A1 Acc2 A2`) the first head's A1, the head ours predicts with
    (TLlib's own `test_acc1` takes the better head by target test accuracy)."""
    accuracies = re.findall(r"^ \* Acc@?1 ([0-9.]+)", log_text, re.M)
    return float(accuracies[-1]) if "test_acc1" in log_text and accuracies else None


def one_thread() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def summary(values: list[float], planned: int) -> str:
    """mean ± sample std, with "(n of N seeds)" when runs failed or were not run; – when none finished."""
    if not values:
        return "– (none finished)"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}" + (f" ({len(values)} of {planned} seeds)"
                                                              if len(values) < planned else "")


def side_flag(side: str) -> str:
    """The command-line flag that asks for one of our columns: ours_peer_hyper -> --peer-hyper."""
    return "--" + side.removeprefix("ours_").replace("_", "-")


def extra_sides(args) -> dict[str, list[str]]:
    """Our columns beside the recipe's defaults that the command line asks for -> the methods they run."""
    return {side: [m for m in getattr(args, side.removeprefix("ours_")).split(",") if m]
            for side in OUR_SIDES if side != "ours"}


def lr_methods(args) -> list[str]:
    return [m for m in args.lr_by_agreement.split(",") if m]


def table(results: dict, methods: list[str], tasks: list[str], seeds: list[int], args) -> str:
    """The markdown table: per task and method, each side's mean ± std over seeds and mean seconds."""
    command = (f"python benchmarks/peer_side_by_side.py --methods {args.methods} --tasks {args.tasks} "
               f"--seeds {args.seeds} --iterations {args.iterations}"
               + "".join(f" {side_flag(side)} {','.join(chosen)}"
                         for side, chosen in extra_sides(args).items() if chosen)
               + (f" --peer-equal-budget {args.peer_equal_budget}" if args.peer_equal_budget else "")
               + (f" --lr-by-agreement {args.lr_by_agreement}" if args.lr_by_agreement else ""))
    by_agreement = [m for m in lr_methods(args) if m in methods]
    equal_budget = [m for m in args.peer_equal_budget.split(",") if m in methods]
    requested = extra_sides(args)
    extra = [side for side, chosen in requested.items() if set(chosen) & set(methods)]  # columns of no row: none
    lines = [f"# Ours vs Transfer-Learning-Library, {args.iterations} iterations of batch 128, LeNet 28×28 grey",
             "", f"Seeds {args.seeds}; one thread per process, {args.jobs} processes at a time; target test accuracy "
             "in % (mean ± sample std over seeds; TLlib: its last iterate, as ours), wall time per run (mean s). "
             "*ours*: the recipe's defaults; *peer's optimiser*: the same recipe with "
             f"`{' '.join(PEER_OPTIMISER)}`; *peer's optimiser and lr*: also TLlib's `--lr` for the task; "
             "*all the peer's hyper-parameters*: also its other digit flags as recipe keys (`PEER_HYPER`); "
             f"*peer's LeNet and optimiser*: the peer's optimiser and `{' '.join(PEER_BACKBONE)}`, TLlib's LeNet, "
             "whose fc(500)-ReLU-dropout ours leaves to the classifier's bottleneck (the other columns: `lenet`); "
             "*all the peer's hyper-parameters and its LeNet*: both."
             + (f" *TLlib, equal budget*: TLlib without the training it does beyond ours (`PEER_EQUAL_BUDGET`: "
                f"{'; '.join(f'{m}: `{chr(32).join(PEER_EQUAL_BUDGET[m])}`' for m in equal_budget)})."
                if equal_budget else "")
             + (f" *ours, lr0 by seed agreement*: our recipe at each lr0 of {', '.join(LR_CANDIDATES)} "
                "(`train.lr`), the one whose seeds' models agree most on 2,000 target training images (the "
                "recommendation's seed agreement; no target label read) in brackets with its agreement, and that "
                "column's gap to TLlib: three runs' budget for each seed of the column." if by_agreement else ""),
             f"Command: `{command}`", "",
             "| task | method | ours (%) | " + "".join(f"{OUR_SIDES[side][0]} (%) | " for side in extra)
             + ("ours, lr0 by seed agreement (%) | " if by_agreement else "")
             + "TLlib (%) | " + ("TLlib, equal budget (%) | " if equal_budget else "")
             + "ours − TLlib | " + ("lr0 by seed agreement − TLlib | " if by_agreement else "")
             + "ours (s) | TLlib (s) |",
             "|---|---|---|" + "---|" * (len(extra) + 2 * bool(by_agreement) + bool(equal_budget)) + "---|---|---|---|"]

    def column(side, m, t):
        side = run_side(side, m, t) if side in ALL_OURS else side  # a column repeating another's runs
        return [results[(side, m, t, s)]["accuracy"] for s in seeds if (side, m, t, s) in results]

    def same(side, m, t):
        return "= " if run_side(side, m, t) != side and column(side, m, t) else ""

    def seconds(side, m, t):
        finished = [results[(side, m, t, s)]["seconds"] for s in seeds
                    if (side, m, t, s) in results and results[(side, m, t, s)]["seconds"] is not None]
        return f"{statistics.mean(finished):.0f}" if finished else "–"

    def gap(ours, peer):
        return f"{statistics.mean(ours) - statistics.mean(peer):+.2f}" if ours and peer else "–"

    def picked(m, t):
        """(the cell of the lr0 seed agreement picks, its gap to TLlib)"""
        pick = lr_by_agreement(results, args.out, m, t, seeds) if m in by_agreement else None
        if pick is None:
            return ("– (not every lr0 finished)" if m in by_agreement else "–"), "–"
        accuracies = column(f"ours_lr{pick[0]}", m, t)
        return f"{summary(accuracies, len(seeds))} (lr0 {pick[0]}; {pick[1]:.4f})", gap(accuracies, column("peer", m, t))

    for t in tasks:
        for m in methods:
            ours, peer = column("ours", m, t), column("peer", m, t)
            by_seed_agreement = picked(m, t) if by_agreement else None
            lines.append(f"| {TASKS[t][0]} | {m} | {summary(ours, len(seeds))} | "
                         + "".join((f"{same(side, m, t)}{summary(column(side, m, t), len(seeds))}" if m in requested[side]
                                    else "–") + " | " for side in extra)
                         + (f"{by_seed_agreement[0]} | " if by_agreement else "")
                         + f"{summary(peer, len(seeds))} | "
                         + ((f"{summary(column('peer_equal_budget', m, t), len(seeds))} | " if m in equal_budget else "– | ")
                            if equal_budget else "")
                         + f"{gap(ours, peer)} | " + (f"{by_seed_agreement[1]} | " if by_agreement else "")
                         + f"{seconds('ours', m, t)} | "
                         f"{seconds('peer', m, t)} |")
    if by_agreement:
        lines += ["", "Every lr0 of the *lr0 by seed agreement* column: target test accuracy (%) and, in brackets, the "
                  "agreement of its seeds (the label-free score the column picks by); the pick in bold.", "",
                  "| task | method | " + " | ".join(f"lr0 {lr}" for lr in LR_CANDIDATES) + " |",
                  "|---|---|" + "---|" * len(LR_CANDIDATES)]
        for t in tasks:
            for m in by_agreement:
                scores = lr_agreements(results, args.out, m, t, seeds)
                pick = lr_by_agreement(results, args.out, m, t, seeds)
                cells = [f"{summary(column(f'ours_lr{lr}', m, t), len(seeds))}"
                         + (f" ({scores[lr]:.4f})" if scores.get(lr) is not None else
                            " (a seed stopped: not a candidate)" if lr in scores else "") for lr in LR_CANDIDATES]
                lines.append(f"| {TASKS[t][0]} | {m} | " + " | ".join(
                    f"**{cell}**" if pick and pick[0] == lr else cell for lr, cell in zip(LR_CANDIDATES, cells)) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="dann,cdan,mcc")
    parser.add_argument("--tasks", default="M2U,U2M")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--peer-optimiser", default="", help="methods also run with TLlib's optimiser protocol")
    parser.add_argument("--peer-protocol", default="",
                        help="methods also run with TLlib's optimiser protocol and its learning rate for the task")
    parser.add_argument("--peer-hyper", default="",
                        help=f"methods also run with all of TLlib's digit hyper-parameters ({', '.join(PEER_HYPER)})")
    parser.add_argument("--peer-backbone", default="",
                        help="methods also run with TLlib's optimiser protocol and its LeNet (lenet_fc500)")
    parser.add_argument("--peer-all", default="",
                        help=f"methods also run with all of TLlib's hyper-parameters and its LeNet "
                             f"({', '.join(PEER_HYPER)})")
    parser.add_argument("--peer-equal-budget", default="",
                        help=f"methods whose TLlib run is repeated without its training beyond ours "
                             f"({', '.join(PEER_EQUAL_BUDGET)})")
    parser.add_argument("--lr-by-agreement", default="",
                        help=f"methods also run at every lr0 of {', '.join(LR_CANDIDATES)}, the one picked by seed "
                             "agreement in a column of its own")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--finished", action="store_true",
                        help="launch nothing: the table of the runs that finished (the others are gaps in their rows)")
    parser.add_argument("--ours-only", action="store_true",
                        help="launch only our runs; TLlib's columns show its runs already in --out (the others gaps)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/runs/peer")
    parser.add_argument("--tllib", type=Path, default=Path(os.environ.get("TLLIB", "/tmp/tllib")))
    parser.add_argument("--peer-data", type=Path, default=Path("/tmp/tllib_data/digits"))
    args = parser.parse_args()
    methods, tasks = args.methods.split(","), args.tasks.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    also = extra_sides(args)
    unknown = [m for m in methods + sum(also.values(), []) + lr_methods(args) if m not in PEER_FLAGS] + [t for t in tasks if t not in TASKS]
    if unknown:
        sys.exit(f"error: unknown method or task {unknown} (methods: {', '.join(PEER_FLAGS)}; tasks: M2U, U2M)")
    equal_budget = [m for m in args.peer_equal_budget.split(",") if m]
    if [m for m in equal_budget if m not in PEER_EQUAL_BUDGET]:
        sys.exit(f"error: --peer-equal-budget: TLlib trains beyond our budget only in {', '.join(PEER_EQUAL_BUDGET)} "
                 f"(PEER_EQUAL_BUDGET), not {[m for m in equal_budget if m not in PEER_EQUAL_BUDGET]}")
    for side in ("ours_peer_hyper", "ours_peer_all"):
        unmapped = [m for m in also[side] if m not in PEER_HYPER]
        if unmapped:
            sys.exit(f"error: {side_flag(side)}: no TLlib hyper-parameters mapped to our keys for {unmapped} "
                     f"(PEER_HYPER has {', '.join(PEER_HYPER)})")
    if not args.finished and not args.ours_only and not (args.tllib / "tllib").is_dir():
        sys.exit(f"error: no TLlib work tree at {args.tllib} (see {PEER_KIT / 'README.md'})")
    if not args.finished and not args.ours_only and not (args.peer_data / "MNIST/image_list/mnist_train.txt").is_file():
        subprocess.run([sys.executable, str(PEER_KIT / "prepare_data.py"), "--out", str(args.peer_data),
                        "--src", os.environ.get("DA_TOOLKIT_DATA", str(ROOT.parent / "shared" / "data"))], check=True)
    jobs = [(side, m, t, s) for m in methods for t in tasks for s in seeds
            for side in dict.fromkeys(("ours", "peer", *(side for side, chosen in also.items() if m in chosen),
                                       *(["peer_equal_budget"] if m in equal_budget else []),
                                       *(run_side(x, m, t) for x in LR_SIDES if m in lr_methods(args))))
            if side not in ALL_OURS or run_side(side, m, t) == side]
    results: dict = {}

    def run(job):
        side, m, t, s = job
        try:
            result = (our_run(side, m, t, s, args.iterations, args.out, not args.finished) if side in ALL_OURS else
                      peer_run(side, m, t, s, args.iterations, args.out, args.tllib, args.peer_data,
                               not args.finished and not args.ours_only))
        except NotFinished:
            why = "--finished" if args.finished else "--ours-only"
            print(f"{side} {m} {t} seed {s}: not finished (not launched: {why})", flush=True)
            return
        except (subprocess.CalledProcessError, RuntimeError) as error:  # a stopped run: the table says so
            print(f"{side} {m} {t} seed {s}: FAILED ({error})", flush=True)
            return
        took = f"in {result['seconds']:.0f} s" if result["seconds"] is not None else "(read from its log)"
        print(f"{side} {m} {t} seed {s}: {result['accuracy']:.2f}% {took}", flush=True)
        results[job] = result

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(run, jobs))
    text = table(results, methods, tasks, seeds, args)
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
