"""Collectives per training step, step time and 2-process exactness of data-parallel training (CPU, gloo).

Runs the `dann` adapter's own training (`JointAdaptation.fit` under `train_loop`: the shared
classifier and a domain discriminator on a source + target batch, SGD, one backward per step) on
random images, once in this process (no process group) and once in 2 gloo processes with the same
global batch, for each backbone given. Per step of the 2-process run (rank 0):

* collectives: the c10d operations (all_reduce, broadcast, ...) the step issued, counted with
  torch.profiler over `--profiled` steps (gradient buckets of DistributedDataParallel's reducer and
  collectives called from Python alike: both go through the c10d dispatcher ops);
* step time: the median and the fastest wall time of `--steps` steps after `--warmup` steps (not
  profiled; the fastest is the one least disturbed by other processes on a shared machine);
* exactness: the largest |w₂ − w₁| over every weight of the classifier and the discriminator
  between the 2-process run and the 1-process one, and between the two ranks.

Each backbone runs twice: as trained (its batch norm normalises with each rank's half-batch
statistics on the CPU, and dropout draws each rank's masks from the same seed, so 2 processes
are not 1 there by design), and `split-invariant` (dropout off, batch-norm layers removed), where
the only difference left is how the gradient is reduced.

    OMP_NUM_THREADS=1 python benchmarks/ddp_collectives.py [--backbones lenet resnet10t] [--steps 10]
        [--out results.json] [--save-weights FILE.pt] [--compare-weights FILE.pt]

`--save-weights` keeps the 2-process weights; `--compare-weights` reports the largest difference
from weights saved by another version of the code (same arguments).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from da_toolkit.adapters import adversarial
from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.adapters.dann import DANN
from da_toolkit.context import Context
from da_toolkit.data import DomainDataset
from da_toolkit.models import create_classifier
from da_toolkit.recipe import TrainConfig

# backbone -> (image size, channels)
SHAPES = {"lenet": (28, 1), "dtn": (32, 3), "resnet10t": (32, 3), "resnet18": (32, 3)}
IMAGES, SEED = 256, 0


def split_invariant(module: nn.Module) -> nn.Module:
    """`module` with dropout off and every batch-norm layer replaced by the identity (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            if isinstance(child, nn.modules.dropout._DropoutNd):
                child.p = 0.0
            split_invariant(child)
    return module


def domains(size: int, channels: int) -> tuple[DomainDataset, DomainDataset]:
    generator = torch.Generator().manual_seed(SEED)
    images = [torch.randint(0, 256, (IMAGES, channels, size, size), dtype=torch.uint8, generator=generator)
              for _ in range(2)]
    labels = torch.randint(0, 10, (IMAGES,), generator=generator)
    return DomainDataset(images[0], labels, "source"), DomainDataset(images[1], torch.full_like(labels, -1), "target")


def fit(backbone: str, invariant: bool, args, main: bool) -> dict:
    """Train DANN for warmup + steps + profiled iterations; its weights, step times and collectives."""
    torch.manual_seed(SEED)
    size, channels = SHAPES[backbone]
    classifier = create_classifier(backbone, channels, size, 10, 256)
    if invariant:
        split_invariant(classifier)
    train = TrainConfig(iterations=args.warmup + args.steps + args.profiled, batch_size=args.batch, device="cpu",
                        precision="fp32", workers=0)
    options = DANN.Options(guard="ignore", discriminator_dropout=0.0 if invariant else 0.5)
    setup = AdapterSetup(train, size, channels, SEED, lambda n: classifier)
    times, collectives = [], Counter()

    def measured_loop(ctx, stage, iterations, step, state, **kwargs):
        def measured_step(i: int) -> dict:
            if i >= args.warmup + args.steps:
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
                    out = step(i)
                collectives.update(e.name for e in profiler.events() if e.name.startswith("c10d::"))
                return out
            began = time.perf_counter()
            out = step(i)
            if i >= args.warmup:
                times.append(time.perf_counter() - began)
            return out
        return train_loop(ctx, stage, iterations, measured_step, state, **kwargs)

    train_loop = adversarial.train_loop
    adversarial.train_loop = measured_loop
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            ctx = Context(Path(run_dir) / "run", progress=False, log_every=10 ** 9, checkpoint_every=10 ** 9, main=main)
            terms = []
            dann = DANN(options, setup)
            transfer_losses = dann.transfer_losses
            dann.transfer_losses = lambda *a: terms.extend(transfer_losses(*a)) or terms  # keep the discriminator
            dann.fit(classifier, *domains(size, channels), ctx)
            ctx.close()
    finally:
        adversarial.train_loop = train_loop
    weights = {f"classifier.{k}": v.clone() for k, v in classifier.state_dict().items()}
    weights.update({f"discriminator.{k}": v.clone() for k, v in terms[0][2].state_dict().items()})
    return {"weights": weights, "step_s": statistics.median(times), "fastest_step_s": min(times),
            "collectives": {name: count / args.profiled for name, count in sorted(collectives.items())},
            "parameter_tensors": sum(1 for p in classifier.parameters() if p.requires_grad)
            + sum(1 for p in terms[0][2].parameters() if p.requires_grad),
            "parameters": sum(p.numel() for p in classifier.parameters())
            + sum(p.numel() for p in terms[0][2].parameters())}


def rank_main(rank: int, init_file: str, out: str, backbone: str, invariant: bool, args) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.save(fit(backbone, invariant, args, main=rank == 0), f"{out}{rank}.pt")
    finally:
        dist.destroy_process_group()


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["lenet", "resnet10t"], choices=sorted(SHAPES))
    parser.add_argument("--batch", type=int, default=32, help="global batch (source and target each)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--profiled", type=int, default=2, help="steps whose collectives are counted")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--save-weights", type=Path)
    parser.add_argument("--compare-weights", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load average {load:.2f}; DANN, global batch "
          f"{args.batch} source + {args.batch} target, {args.steps} timed steps after {args.warmup}")
    rows, saved = [], {}
    earlier = torch.load(args.compare_weights) if args.compare_weights else {}
    for backbone in args.backbones:
        for invariant in (False, True):
            name = f"{backbone}{', split-invariant' if invariant else ''}"
            one = fit(backbone, invariant, args, main=True)
            with tempfile.TemporaryDirectory() as folder:
                mp.spawn(rank_main, args=(f"{folder}/init", f"{folder}/rank", backbone, invariant, args), nprocs=2)
                ranks = [torch.load(f"{folder}/rank{r}.pt") for r in range(2)]
            two = ranks[0]
            row = {"config": name, "parameters": two["parameters"], "parameter_tensors": two["parameter_tensors"],
                   "collectives_per_step": two["collectives"],
                   "collectives_per_step_total": sum(two["collectives"].values()),
                   "step_s_1proc": round(one["step_s"], 4), "step_s_2proc": round(two["step_s"], 4),
                   "fastest_step_s_1proc": round(one["fastest_step_s"], 4),
                   "fastest_step_s_2proc": round(two["fastest_step_s"], 4),
                   "max_abs_weight_diff_2proc_vs_1proc": max_difference(two["weights"], one["weights"]),
                   "max_abs_weight_diff_rank0_vs_rank1": max_difference(ranks[0]["weights"], ranks[1]["weights"])}
            if name in earlier:
                row["max_abs_weight_diff_vs_compared"] = max_difference(two["weights"], earlier[name])
            saved[name] = two["weights"]
            rows.append(row)
            print(f"{name:<28} {row['parameters']:>9,} params in {row['parameter_tensors']:>3} tensors   "
                  f"collectives/step {row['collectives_per_step_total']:>5g} {two['collectives']}   "
                  f"step (median/fastest) "
                  f"1 proc {one['step_s']:.3f}/{one['fastest_step_s']:.3f} s, 2 proc {two['step_s']:.3f}/"
                  f"{two['fastest_step_s']:.3f} s   max|w2-w1| "
                  f"{row['max_abs_weight_diff_2proc_vs_1proc']:.3g}   max|rank0-rank1| "
                  f"{row['max_abs_weight_diff_rank0_vs_rank1']:.3g}"
                  + (f"   max|w-compared| {row['max_abs_weight_diff_vs_compared']:.3g}" if name in earlier else ""))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"torch": torch.__version__, "load_average": load, "args": {
            k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1) + "\n")
    if args.save_weights:
        torch.save(saved, args.save_weights)


if __name__ == "__main__":
    main()
