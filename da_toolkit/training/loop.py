"""The one training loop every stage uses.

An adapter writes a `step(iteration) -> {name: scalar}` function that does one optimisation step,
and hands `train_loop` the objects whose state makes up the stage (modules, optimisers,
schedulers, batch streams, image pools: anything with state_dict / load_state_dict). The loop
owns iteration counting, the progress bar, TensorBoard scalars, periodic atomic checkpoints,
resuming and Ctrl-C. Checkpoints also hold the global RNG states, so a resumed run draws the
same dropout masks and batches as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Callable, Protocol

import torch
from tqdm import tqdm

from da_toolkit.context import Context
from da_toolkit.training.checkpoint import load_checkpoint, save_atomic


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> object: ...


class Interrupted(Exception):
    """Training was stopped with Ctrl-C after a checkpoint was written; `--resume` continues it."""


def save_stage(ctx: Context, stage: str, iteration: int, state: dict[str, Stateful]) -> None:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    save_atomic({"iteration": iteration, "rng": rng, "state": {k: v.state_dict() for k, v in state.items()}},
                ctx.checkpoint_path(stage))


def restore_stage(ctx: Context, stage: str, state: dict[str, Stateful]) -> int:
    """Load the stage checkpoint into `state` when resuming; the iteration to start from (0 if none)."""
    path = ctx.checkpoint_path(stage)
    if not (ctx.restores(stage) and path.exists()):
        return 0
    saved = load_checkpoint(path, ctx.device)
    for key, obj in state.items():
        obj.load_state_dict(saved["state"][key])
    torch.set_rng_state(saved["rng"]["torch"].cpu())
    if "cuda" in saved["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in saved["rng"]["cuda"]])
    return saved["iteration"]


@contextlib.contextmanager
def _deferred_ctrl_c():
    """Turn the first Ctrl-C (SIGINT) into a flag the loop checks between steps; a second one interrupts at once."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def train_loop(ctx: Context, stage: str, iterations: int, step: Callable[[int], dict[str, float]],
               state: dict[str, Stateful]) -> None:
    """Run ``step(i)`` for i in [start, iterations), start being 0 or the resumed iteration.

    Scalars returned by `step` go to TensorBoard as ``<stage>/<name>`` every `ctx.log_every`
    iterations and to the progress bar. A checkpoint of `state` is written every
    `ctx.checkpoint_every` iterations, at the end, and on Ctrl-C, which lets the current step
    finish, saves, and raises Interrupted.
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
    with _deferred_ctrl_c() as ctrl_c:
        try:
            while iteration < iterations:
                scalars = step(iteration)
                iteration += 1
                bar.update(1)
                if iteration % ctx.log_every == 0 or iteration == iterations:
                    values = {k: float(v) for k, v in scalars.items()}
                    ctx.log_scalars(stage, iteration, values)
                    bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in list(values.items())[:4]},
                                    refresh=False)
                if ctrl_c["stop"]:
                    raise KeyboardInterrupt
                if iteration % ctx.checkpoint_every == 0 and iteration < iterations:
                    save_stage(ctx, stage, iteration, state)
        except KeyboardInterrupt:
            bar.close()
            save_stage(ctx, stage, iteration, state)
            raise Interrupted(f"{stage} stopped at iteration {iteration} of {iterations}; the checkpoint is "
                              f"saved: run the same command with --resume to continue") from None
    bar.close()
    save_stage(ctx, stage, iteration, state)
    elapsed = time.perf_counter() - began
    ctx.info(f"{stage}: {iterations - start} iterations in {elapsed:.1f} s "
             f"({(iterations - start) / max(elapsed, 1e-9):.1f} it/s)")
    ctx.metrics.setdefault("wall_time_s", {})[stage] = round(elapsed, 2)
