"""What the translators of the digits cpu grid cost, measured in one process on this machine.

The grid's cpu profile trains one CycleGAN per task and seed (600 iterations, 2 domains) and one
StarGAN per seed for all four tasks (3,000 iterations, 4 domains, benchmarks/digits.yaml). This times
the two adapters' own training steps (`CycleGANTraining.step`, `StarGANTraining.step`: streams from
uint8 domains, losses, optimisers) at the profile's sizes (28×28 grey, batch 16, ngf 16, ndf 32, 3
blocks), alternating rounds and keeping each one's best round, which damps noise from other processes;
then it scales the seconds per iteration to the grid's translator budgets per seed. The CycleGAN is
timed without its semantic term (the grid's has it), so its cost here is a lower bound.

    OMP_NUM_THREADS=1 python benchmarks/translator_cost.py [--iterations 20] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from da_toolkit.adapters.cyclegan import CycleGANOptions, CycleGANTraining
from da_toolkit.adapters.stargan import StarGANOptions
from da_toolkit.adapters.stargan.training import StarGANTraining
from da_toolkit.context import Context
from da_toolkit.data import DomainDataset

SIZES = {"batch_size": 16, "ngf": 16, "ndf": 32, "generator_blocks": 3}
TASKS = 4  # a CycleGAN per task; one StarGAN of the four domains serves them all
CYCLEGAN_ITERATIONS, STARGAN_ITERATIONS = 600, 3000


def domain(name: str, seed: int) -> DomainDataset:
    generator = torch.Generator().manual_seed(seed)
    return DomainDataset(torch.randint(0, 256, (256, 1, 28, 28), dtype=torch.uint8, generator=generator),
                         torch.randint(0, 10, (256,), generator=generator), name)


def seconds_per_iteration(make_training, iterations: int, warmup: int = 2) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        ctx = Context(run_dir, device=torch.device("cpu"), progress=False)
        training = make_training(ctx)
        for i in range(warmup):
            training.step(i)
        began = time.perf_counter()
        for i in range(warmup, warmup + iterations):
            training.step(i)
        seconds = (time.perf_counter() - began) / iterations
        ctx.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    domains = [domain(name, seed) for seed, name in enumerate(("mnist", "usps", "syndigits", "ucidigits"))]
    cyclegan = CycleGANOptions(iterations=CYCLEGAN_ITERATIONS, semantic_weight=0.0, label_filter="off", **SIZES)
    stargan = StarGANOptions(iterations=STARGAN_ITERATIONS, semantic_weight=0.0, label_filter="off", **SIZES)
    timings = {"cyclegan": [], "stargan": []}
    for _ in range(args.rounds):
        timings["cyclegan"].append(seconds_per_iteration(
            lambda ctx: CycleGANTraining(cyclegan, domains[0], domains[1], ctx), args.iterations))
        timings["stargan"].append(seconds_per_iteration(
            lambda ctx: StarGANTraining(stargan, domains, ctx), args.iterations))
    cycle, star = min(timings["cyclegan"]), min(timings["stargan"])
    cycle_grid, star_grid = TASKS * CYCLEGAN_ITERATIONS * cycle, STARGAN_ITERATIONS * star
    print(f"{torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.2f}; best of {args.rounds} "
          f"rounds of {args.iterations} iterations")
    print(f"cyclegan: {cycle * 1000:7.1f} ms/iteration (2 domains);  {TASKS} tasks x {CYCLEGAN_ITERATIONS} "
          f"iterations = {cycle_grid:6.0f} s per seed")
    print(f"stargan:  {star * 1000:7.1f} ms/iteration ({len(domains)} domains, a generator update every "
          f"{stargan.n_critic}th);  1 x {STARGAN_ITERATIONS} iterations = {star_grid:6.0f} s per seed")
    print(f"stargan / cyclegan translator cost for the grid: {star_grid / cycle_grid:.2f}")


if __name__ == "__main__":
    main()
