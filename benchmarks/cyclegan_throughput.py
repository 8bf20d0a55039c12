"""Throughput of a CycleGAN training iteration (image pairs per second) at 32×32, on this machine.

Compares, for the reference networks and the small-image ones (1 generator down-sampling, 2-layer
PatchGAN), (a) a bare PyTorch loop of the same networks (G step with GAN + cycle + identity losses,
D step, Adam; fixed tensors, no pool, no logging) with (b) the `cyclegan` adapter's own step run
by `train_loop` as the adapter runs it (image pools, BatchStreams drawing from a uint8 dataset,
scalars to TensorBoard every 5 iterations, progress bar off). Each is timed over the same number
of iterations after a warm-up; the best of a few rounds is kept, which damps noise from other
processes on the machine.

    python benchmarks/cyclegan_throughput.py [--iterations 8] [--rounds 2] [--device cpu]
"""
from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time

import torch
import torch.nn.functional as F

from da_toolkit.adapters.cyclegan import CycleGANOptions, CycleGANTraining
from da_toolkit.context import Context
from da_toolkit.data import DomainDataset
from da_toolkit.models import PatchDiscriminator, ResnetGenerator
from da_toolkit.training.loop import train_loop

# The reference networks (2 generator down-samplings, 3-layer PatchGAN) and the small-image ones the
# adapter picks at 32 px when the recipe does not say (1 down-sampling, 2 layers).
REFERENCE = {"generator_downsamplings": 2, "discriminator_layers": 3}
SMALL = {"generator_downsamplings": 1, "discriminator_layers": 2}
CONFIGS = [{"ngf": 32, "generator_blocks": 6, "batch_size": 16, **REFERENCE},
           {"ngf": 32, "generator_blocks": 6, "batch_size": 16, **SMALL},
           {"ngf": 64, "generator_blocks": 9, "batch_size": 8, **REFERENCE}]
SIZE, CHANNELS = 32, 3


def bare_loop(config: dict, iterations: int, warmup: int, device: torch.device) -> float:
    """Pairs/s of a plain CycleGAN loop: the same networks and losses, no pool, no logging."""
    g_ab, g_ba = (ResnetGenerator(CHANNELS, CHANNELS, config["ngf"], config["generator_blocks"],
                                  downsamplings=config["generator_downsamplings"]).to(device) for _ in range(2))
    d_a, d_b = (PatchDiscriminator(CHANNELS, 64, config["discriminator_layers"]).to(device) for _ in range(2))
    opt_g = torch.optim.Adam(itertools.chain(g_ab.parameters(), g_ba.parameters()), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(itertools.chain(d_a.parameters(), d_b.parameters()), 2e-4, betas=(0.5, 0.999))
    real_a = torch.rand(config["batch_size"], CHANNELS, SIZE, SIZE, device=device) * 2 - 1
    real_b = torch.rand(config["batch_size"], CHANNELS, SIZE, SIZE, device=device) * 2 - 1

    def ls(prediction, value):
        return F.mse_loss(prediction, torch.full_like(prediction, value))

    def iteration():
        fake_b, fake_a = g_ab(real_a), g_ba(real_b)
        rec_a, rec_b = g_ba(fake_b), g_ab(fake_a)
        for d in (d_a, d_b):
            d.requires_grad_(False)
        loss_g = (ls(d_b(fake_b), 1) + ls(d_a(fake_a), 1) + 10 * F.l1_loss(rec_a, real_a)
                  + 10 * F.l1_loss(rec_b, real_b) + 5 * F.l1_loss(g_ab(real_b), real_b)
                  + 5 * F.l1_loss(g_ba(real_a), real_a))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        for d in (d_a, d_b):
            d.requires_grad_(True)
        loss_d = 0.5 * (ls(d_a(real_a), 1) + ls(d_a(fake_a.detach()), 0) + ls(d_b(real_b), 1)
                        + ls(d_b(fake_b.detach()), 0))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()

    for _ in range(warmup):
        iteration()
    sync(device)
    began = time.perf_counter()
    for _ in range(iterations):
        iteration()
    sync(device)
    return iterations * config["batch_size"] / (time.perf_counter() - began)


def adapter_loop(config: dict, iterations: int, warmup: int, device: torch.device) -> float:
    """Pairs/s of the adapter's step as `CycleGAN.fit` runs it: train_loop, pools, streams, TensorBoard."""
    generator = torch.Generator().manual_seed(0)
    source, target = (DomainDataset(torch.randint(0, 256, (512, CHANNELS, SIZE, SIZE), dtype=torch.uint8,
                                                  generator=generator), torch.zeros(512, dtype=torch.int64), name)
                      for name in ("a", "b"))
    options = CycleGANOptions(iterations=warmup + iterations + 1, semantic_weight=0.0, label_filter="off", **config)
    stamps = []

    with tempfile.TemporaryDirectory() as run_dir:
        ctx = Context(run_dir, device=device, progress=False, log_every=5, checkpoint_every=10 ** 9)
        training = CycleGANTraining(options, source, target, ctx)

        def timed_step(i: int) -> dict:
            if i in (warmup, warmup + iterations):
                sync(device)
                stamps.append(time.perf_counter())
            return training.step(i)

        train_loop(ctx, "pixel", options.iterations, timed_step, training.state())
        ctx.close()
    return iterations * config["batch_size"] / (stamps[1] - stamps[0])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=8, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each loop; the best is kept")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f} "
          f"(1 min), {SIZE}×{SIZE}×{CHANNELS}, ndf 64, lambda_identity 0.5, no semantic loss")
    for config in CONFIGS:
        bare, adapter = [], []
        for _ in range(args.rounds):
            torch.manual_seed(0)
            bare.append(bare_loop(config, args.iterations, args.warmup, device))
            torch.manual_seed(0)
            adapter.append(adapter_loop(config, args.iterations, args.warmup, device))
        name = (f"ngf {config['ngf']}, {config['generator_blocks']} blocks, {config['generator_downsamplings']} down, "
                f"D {config['discriminator_layers']} layers, batch {config['batch_size']}")
        print(f"{name:<52} bare {max(bare):6.2f} pairs/s   adapter {max(adapter):6.2f} pairs/s   "
              f"adapter/bare {max(adapter) / max(bare):.3f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
