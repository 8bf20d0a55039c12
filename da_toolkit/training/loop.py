"""The one training loop every stage uses.

An adapter writes a `step(iteration) -> {name: scalar}` function that does one optimisation step,
and hands `train_loop` the objects whose state makes up the stage (modules, optimisers,
schedulers, batch streams, image pools: anything with state_dict / load_state_dict). The loop
owns iteration counting, the progress bar, TensorBoard scalars, periodic atomic checkpoints,
resuming and Ctrl-C.
"""
from __future__ import annotations

import time
from typing import Callable, Protocol

from tqdm import tqdm

from da_toolkit.context import Context
from da_toolkit.training.checkpoint import load_checkpoint, save_atomic


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> object: ...


class Interrupted(Exception):
    """Training was stopped with Ctrl-C after a checkpoint was written; `--resume` continues it."""


def save_stage(ctx: Context, stage: str, iteration: int, state: dict[str, Stateful]) -> None:
    save_atomic({"iteration": iteration, "state": {k: v.state_dict() for k, v in state.items()}},
                ctx.checkpoint_path(stage))


def restore_stage(ctx: Context, stage: str, state: dict[str, Stateful]) -> int:
    """Load the stage checkpoint into `state` when resuming; the iteration to start from (0 if none)."""
    path = ctx.checkpoint_path(stage)
    if not (ctx.resume and path.exists()):
        return 0
    saved = load_checkpoint(path, ctx.device)
    for key, obj in state.items():
        obj.load_state_dict(saved["state"][key])
    return saved["iteration"]


def train_loop(ctx: Context, stage: str, iterations: int, step: Callable[[int], dict[str, float]],
               state: dict[str, Stateful]) -> None:
    """Run ``step(i)`` for i in [start, iterations), start being 0 or the resumed iteration.

    Scalars returned by `step` go to TensorBoard as ``<stage>/<name>`` every `ctx.log_every`
    iterations and to the progress bar. A checkpoint of `state` is written every
    `ctx.checkpoint_every` iterations, at the end, and on Ctrl-C (which then raises Interrupted).
    """
    start = restore_stage(ctx, stage, state)
    if start >= iterations:
        if start:
            ctx.info(f"{stage}: finished earlier ({start} iterations), reusing its checkpoint")
        return
    if start:
        ctx.info(f"{stage}: resuming at iteration {start} of {iterations}")
    bar = tqdm(total=iterations, initial=start, desc=stage, disable=not ctx.progress, dynamic_ncols=True,
               unit="it", leave=True)
    began = time.perf_counter()
    iteration = start
    try:
        while iteration < iterations:
            scalars = step(iteration)
            iteration += 1
            bar.update(1)
            if iteration % ctx.log_every == 0 or iteration == iterations:
                values = {k: float(v) for k, v in scalars.items()}
                ctx.log_scalars(stage, iteration, values)
                bar.set_postfix({k: f"{v:.3g}" for k, v in list(values.items())[:4]}, refresh=False)
            if iteration % ctx.checkpoint_every == 0 and iteration < iterations:
                save_stage(ctx, stage, iteration, state)
    except KeyboardInterrupt:
        bar.close()
        save_stage(ctx, stage, iteration, state)
        raise Interrupted(f"{stage} interrupted at iteration {iteration} of {iterations}; "
                          f"the checkpoint is saved, run again with --resume to continue") from None
    bar.close()
    save_stage(ctx, stage, iteration, state)
    elapsed = time.perf_counter() - began
    ctx.info(f"{stage}: {iterations - start} iterations in {elapsed:.1f} s "
             f"({(iterations - start) / max(elapsed, 1e-9):.1f} it/s)")
    ctx.metrics.setdefault("wall_time_s", {})[stage] = round(elapsed, 2)
