"""Data-parallel training over several processes, launched by torchrun (or `da-toolkit run --nproc N`).

Every process (rank) runs the whole pipeline on its own slice of every batch; what keeps the ranks
one model:

* **the same global batch** — every `BatchStream` walks the same seeded permutation on every rank
  and rank r takes the r-th of `world` equal slices of each global batch of `train.batch_size`
  (`shard`), so the union of the ranks' batches is the batch a 1-process run draws. The batch size
  must be a multiple of the process count.
* **the same weights** — `distribute(module)` wraps a module that trains in torch's
  `DistributedDataParallel`: it broadcasts rank 0's parameters and buffers once, and its
  reducer averages the gradients over the ranks in buckets of up to 25 MB (the first of 1 MB, so
  that communication starts early), each all-reduced as soon as backward has produced it,
  overlapped with the rest of backward. Each optimiser step thus
  applies the gradient of the mean loss over the global batch (every rank's loss is the mean over
  its equal slice; DDP divides the sum of the ranks' gradients by their count). A training step
  calls the wrapper (`forward` arms the reducer for the next backward) and optimises, checkpoints
  and evaluates the module itself: the wrapper shares its parameters, so state dicts keep their
  names and a checkpoint reads the same with and without torchrun. Networks frozen in a backward
  (a discriminator while its generator or encoder trains, ADDA's source encoder, CyCADA's f_S)
  are called as they are, not through a wrapper. Every backward that follows a wrapper's forward
  gives a gradient to every trainable parameter behind it (a step may call a wrapper several times
  before one backward: the labeled-target batch, CycleGAN's generators, ADDA's target encoder; its
  reducer fires once per parameter all the same), so `find_unused_parameters` is off: no walk
  over the autograd graph after every forward, and a parameter left without a gradient makes DDP
  raise at the next step instead of going silently unreduced. `static_graph` is off too: it serves
  reentrant backward passes (activation checkpointing) and parameters unused in every step, neither
  of which happens here. A step with several backward passes (ADDA's and CycleGAN's alternations
  of discriminator and encoder or generators) reduces in each the wrappers whose parameters it reaches.
  Every rank seeds its RNGs alike, so the ranks stay in lock step and a checkpoint of rank 0 is
  the state of every rank (CycleGAN's image pools take the fakes of the global batch, `global_batch`,
  to be alike on every rank, as in one process).
* **batch-norm statistics** — on CUDA, batch-norm layers become `SyncBatchNorm` (mean and variance
  over the global batch, as in a 1-process run: per-GPU batches are often too small for good
  statistics). SyncBatchNorm has no CPU kernel, so on CPU (gloo) a layer normalises with its
  rank's statistics and the running means and variances of a distributed module's layers are
  averaged over the ranks after every training forward of the module, all in one all-reduce,
  which keeps evaluation identical on every rank (DDP's own handling, rank 0's
  buffers broadcast before every forward, is off: `forward_sync_buffers=False`).

Rank 0 alone writes the run directory (lock, recipe, log, TensorBoard, checkpoints, caches,
classifier, metrics) and evaluates; see `World.main`. One process (no torchrun) changes nothing.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.weak import WeakIdKeyDictionary

from da_toolkit.errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes the run directory and evaluates (rank 0)."""
        return self.rank == 0


def current() -> World:
    """The world of torch.distributed's default group, or a world of one process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def started_by_torchrun() -> bool:
    """Whether torchrun started this process as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join the group of the processes torchrun started, for the duration of a run; yields the
    device of this rank (cuda:LOCAL_RANK on CUDA). Backend: nccl on CUDA, gloo on CPU. Without
    torchrun (or when a group exists already) it yields `device` unchanged."""
    if not started_by_torchrun() or dist.is_initialized():
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def shard(batch_size: int, world: World) -> slice:
    """The slice of a global batch of `batch_size` that rank `world.rank` trains on; UserError when
    the batch does not split evenly over the ranks."""
    if batch_size % world.size:
        raise UserError(f"a batch of {batch_size} images does not split evenly over {world.size} processes: use a "
                        f"batch size that is a multiple of {world.size} (train.batch_size, pixel.batch_size)")
    size = batch_size // world.size
    return slice(world.rank * size, (world.rank + 1) * size)


# parameters a DistributedDataParallel reducer averages already: a second wrapper would average them twice
_distributed = WeakIdKeyDictionary()  # by identity: a tensor's == compares values


def distribute(module: nn.Module, device: torch.device) -> nn.Module:
    """Make `module` train data-parallel over the current world (see the module docstring): its batch-norm
    layers converted in place, rank 0's parameters and buffers on every rank. Returns what a training step
    calls: a `DistributedDataParallel` wrapper of `module`, or `module` itself in a world of one process or
    when none of its parameters trains (nothing to reduce). Build the optimiser over, checkpoint and evaluate
    `module` itself. Distributing a module twice is a programming error (its gradients would be averaged twice)."""
    world = current()
    if world.size == 1:
        return module
    trained = [parameter for parameter in module.parameters() if parameter.requires_grad]
    if any(parameter in _distributed for parameter in trained):
        raise ValueError(f"{type(module).__name__}: distributed twice; call the wrapper the first distribute returned")
    if device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    elif any(isinstance(layer, _BatchNorm) for layer in module.modules()) and \
            _average_running_stats not in module._forward_hooks.values():
        module.register_forward_hook(_average_running_stats)
    if not trained:
        return module
    wrapper = DistributedDataParallel(module, forward_sync_buffers=False, find_unused_parameters=False)
    _distributed.update(dict.fromkeys(trained, True))
    return wrapper


def _average_running_stats(module: nn.Module, inputs, output) -> None:
    """After a forward of a distributed module (called through its wrapper or not): the running mean and
    variance of each of its batch-norm layers in training mode ← their mean over the ranks, all layers in
    one all-reduce (new tensors: backward may still need the ones the forward read). A layer the forward did
    not run holds the same statistics on every rank, which their mean keeps; in eval mode nothing changes
    and nothing is sent (rank 0 evaluates alone)."""
    layers = [layer for layer in module.modules()
              if isinstance(layer, _BatchNorm) and layer.training and layer.track_running_stats]
    if not layers:
        return
    with torch.no_grad():
        stats = torch.cat([torch.cat([layer.running_mean, layer.running_var]) for layer in layers])
        dist.all_reduce(stats)
        stats.div_(dist.get_world_size())
        parts = stats.split([len(tensor) for layer in layers for tensor in (layer.running_mean, layer.running_var)])
        for layer, mean, var in zip(layers, parts[0::2], parts[1::2]):
            layer.running_mean, layer.running_var = mean.clone(), var.clone()


def global_batch(share: torch.Tensor) -> torch.Tensor:
    """The ranks' equal shares of a batch (this rank's: `share`) concatenated in rank order, on every rank: the
    batch a 1-process run has (detached); `share` itself in one process."""
    world = current()
    if world.size == 1:
        return share
    shares = [torch.empty_like(share) for _ in range(world.size)]
    dist.all_gather(shares, share.detach().contiguous())
    return torch.cat(shares)


def barrier() -> None:
    """Wait until every process has come here (nothing to wait for in one process)."""
    if current().size > 1:
        dist.barrier()


def from_rank_zero(tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's `tensor` on every rank (the ranks' tensors have the same dtype and dimension count, their
    sizes may differ); `tensor` itself in one process. Makes what every rank computed alike exactly alike
    (the translated source set the feature stage trains on)."""
    if current().size == 1:
        return tensor
    shape = torch.tensor(tensor.shape, dtype=torch.int64)
    dist.broadcast(shape, 0)
    same = tuple(shape.tolist()) == tuple(tensor.shape)
    out = tensor.contiguous() if same else torch.empty(shape.tolist(), dtype=tensor.dtype, device=tensor.device)
    dist.broadcast(out, 0)
    return out


def launch(nproc: int, arguments: list[str]) -> int:
    """`da-toolkit run --nproc N ...`: `da-toolkit <arguments>` in `nproc` processes under torchrun on
    this machine; returns torchrun's exit status."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "da_toolkit", *arguments]
    return subprocess.run(command, check=False).returncode
