"""The one training loop every stage uses.

An adapter writes a `step(iteration) -> {name: scalar}` function that does one optimisation step,
and hands `train_loop` the objects whose state makes up the stage (modules, optimisers,
schedulers, batch streams, image pools: anything with state_dict / load_state_dict). The loop
owns iteration counting, the progress bar, TensorBoard scalars, periodic atomic checkpoints,
resuming and Ctrl-C. Checkpoints also hold the global RNG states, so a resumed run draws the
same dropout masks and batches as an uninterrupted one, and in fp16 the gradient scaler of every
optimiser among the state (`Precision.scalers`), so a resumed run scales as an uninterrupted one.

Checkpoints are device-neutral: every tensor is written on the CPU (RNG states as CPU
ByteTensors), and every Stateful's `load_state_dict` takes tensors on any device and puts them
where it works (modules and optimisers onto their parameters' device, streams and pools onto
theirs, generator states onto the CPU), so a run trained on a GPU resumes on a CPU and the reverse.
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from typing import Callable, Protocol

import torch
from tqdm import tqdm

from da_toolkit.context import Context
from da_toolkit.errors import UserError
from da_toolkit.training.checkpoint import UnreadableFile, load_checkpoint, load_state, save_checkpoint


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> object: ...


class Interrupted(Exception):
    """Training was stopped with Ctrl-C after a checkpoint was written; `--resume` continues it."""


class GlobalRNG:
    """torch's global RNG states (CPU, and each CUDA GPU when present) as a Stateful: CPU ByteTensors.

    A state saved with GPUs restores the CPU state and as many GPUs' states as both machines have (a
    run trained on a GPU resumes on the CPU); one saved without restores the CPU state only."""

    @staticmethod
    def state_dict() -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return rng

    @staticmethod
    def load_state_dict(rng: dict) -> None:
        torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and torch.cuda.is_available():
            for index, state in enumerate(rng["cuda"][:torch.cuda.device_count()]):
                torch.cuda.set_rng_state(state.cpu(), index)


def to_cpu(value):
    """`value` (nested dicts, lists and tuples of tensors and plain data) with every tensor on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(item) for item in value)
    return value


def save_stage(ctx: Context, stage: str, iteration: int, state: dict[str, Stateful], wall_time: float) -> None:
    """Checkpoint `state` (and in fp16 its optimisers' gradient scalers) after `iteration` steps that took
    `wall_time` seconds in all (over resumes); every tensor is written on the CPU. Only the process that
    writes the run directory (`ctx.main`) saves: the state is the same on every rank."""
    if not ctx.main:
        return
    states = {key: obj.state_dict() for key, obj in state.items()}
    scalers = {key: scaler.state_dict() for key, scaler in ctx.precision.scalers(state).items()}
    save_checkpoint(to_cpu({"iteration": iteration, "rng": GlobalRNG.state_dict(), "state": states,
                            "grad_scalers": scalers, "wall_time_s": wall_time}), ctx.checkpoint_path(stage), "stage")


def restore_stage(ctx: Context, stage: str, state: dict[str, Stateful]) -> tuple[int, float]:
    """Load the stage checkpoint into `state` when resuming: (iteration to start from, seconds spent so
    far); (0, 0.0) when the stage starts afresh."""
    path = ctx.checkpoint_path(stage)
    if not (ctx.restores(stage) and path.exists()):
        return 0, 0.0
    saved = load_checkpoint(path, "stage")
    wall_time = saved.get("wall_time_s", 0.0)
    saved_scalers = saved.get("grad_scalers", {})  # empty in a checkpoint written in fp32 or bf16: fresh scalers
    if (not isinstance(saved["iteration"], int) or not isinstance(saved["state"], dict)
            or not isinstance(wall_time, (int, float)) or not isinstance(saved_scalers, dict)):
        raise UnreadableFile(f"{path}: not a da-toolkit stage checkpoint (malformed iteration, state, gradient "
                             f"scalers or wall time)")
    missing = [key for key in state if key not in saved["state"]]
    if missing:
        raise UnreadableFile(f"{path}: this {stage} checkpoint has no state for {', '.join(missing)}; it was written "
                             f"by another method or version (start afresh with --overwrite)")
    for key, obj in state.items():
        load_state(obj, saved["state"][key], path, f"state of {key}")
    for key, scaler in ctx.precision.scalers(state).items():
        if key in saved_scalers:
            load_state(scaler, saved_scalers[key], path, f"gradient scaler of {key}")
    load_state(GlobalRNG, saved["rng"], path, "random number generator state")
    return saved["iteration"], float(wall_time)


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


class TrainingDiverged(UserError):
    """A loss or another logged scalar became NaN or infinite; the last good checkpoint is kept."""


class _StopRequested(Exception):
    """The first Ctrl-C, acted on between two steps."""


def check_finite(stage: str, steps: list[tuple[int, dict]], last_saved: int) -> None:
    """Stop the run with one clear line when a scalar of any of `steps` ((iteration, scalars) pairs,
    kept since the last check) is NaN or infinite; checked only at log points and before a checkpoint,
    so the per-step cost is nothing but keeping the scalars."""
    for iteration, scalars in steps:
        for name, value in scalars.items():
            value = float(value)
            if not math.isfinite(value):
                kept = (f"its last good checkpoint (iteration {last_saved}) is kept" if last_saved
                        else "no checkpoint of it was written")
                raise TrainingDiverged(
                    f"{stage}: {name} became {value} at iteration {iteration}; the run is stopped and {kept}. The "
                    f"learning rate or a loss weight is likely too high for this stage: lower it and start again "
                    f"with --overwrite")
    steps.clear()


def train_loop(ctx: Context, stage: str, iterations: int, step: Callable[[int], dict[str, float]],
               state: dict[str, Stateful], candidate: torch.nn.Module | None = None,
               score_start: bool = False) -> None:
    """Run ``step(i)`` for i in [start, iterations), start being 0 or the resumed iteration.

    Scalars returned by `step` go to TensorBoard as ``<stage>/<name>`` every `ctx.log_every`
    iterations and to the progress bar; they are checked for NaN/Inf there and before every
    checkpoint (`TrainingDiverged`), so no checkpoint ever holds a diverged state. A checkpoint of
    `state` is written every `ctx.checkpoint_every` iterations and at the end, only ever between
    two steps. The first Ctrl-C lets the current step finish, saves and raises Interrupted; a
    second one stops at once without saving (the last checkpoint is kept). Wall time accumulates
    over resumes (stored in the checkpoint).

    `candidate`: the model this stage returns, given by the stage that trains the run's classifier;
    the run's `ctx.selection` scores it every `selection.every` iterations, at the last one and,
    with `score_start`, before the first (a model trained by an earlier stage), and is checkpointed
    with the stage.
    """
    selection = ctx.selection if candidate is not None else None
    if selection is not None:
        state = {**state, "selection": selection}
        every = selection.every(iterations)
    start, earlier = restore_stage(ctx, stage, state)
    if not ctx.is_shared(stage):
        ctx.earlier_wall_time += earlier
    if start >= iterations:
        if start:
            ctx.info(f"{stage}: finished earlier ({start} iterations), reusing its checkpoint")
        return
    if start:
        ctx.info(f"{stage}: resuming at iteration {start} of {iterations}")
    bar = tqdm(total=iterations, initial=start, desc=stage, disable=not ctx.progress, dynamic_ncols=True,
               unit="it", leave=True)
    began = time.perf_counter()
    iteration = last_saved = start
    unchecked: list[tuple[int, dict]] = []  # the steps' scalars since the last NaN/Inf check
    if selection is not None and score_start and start == 0:
        selection.observe(stage, 0, candidate)

    def save() -> None:
        nonlocal last_saved
        check_finite(stage, unchecked, last_saved)
        save_stage(ctx, stage, iteration, state, earlier + time.perf_counter() - began)
        last_saved = iteration

    with _deferred_ctrl_c() as ctrl_c:
        try:
            while iteration < iterations:
                scalars = step(iteration)
                iteration += 1
                unchecked.append((iteration, scalars))
                bar.update(1)
                if iteration % ctx.log_every == 0 or iteration == iterations:
                    check_finite(stage, unchecked, last_saved)
                    values = {k: float(v) for k, v in scalars.items()}
                    ctx.log_scalars(stage, iteration, values)
                    bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in list(values.items())[:4]},
                                    refresh=False)
                if selection is not None and (iteration % every == 0 or iteration == iterations):
                    check_finite(stage, unchecked, last_saved)
                    selection.observe(stage, iteration, candidate)
                if ctrl_c["stop"]:
                    raise _StopRequested
                if iteration % ctx.checkpoint_every == 0 and iteration < iterations:
                    save()
        except _StopRequested:
            bar.close()
            save()
            raise Interrupted(f"{stage} stopped at iteration {iteration} of {iterations}; the checkpoint is "
                              f"saved: run the same command with --resume to continue") from None
        except KeyboardInterrupt:
            bar.close()
            raise Interrupted(f"{stage} stopped at once during iteration {iteration + 1} (second Ctrl-C); nothing "
                              f"was saved, the last checkpoint (iteration {last_saved}) is kept: run the same "
                              f"command with --resume to continue from it") from None
        finally:
            bar.close()
    save()
    elapsed = time.perf_counter() - began
    ctx.info(f"{stage}: {iterations - start} iterations in {elapsed:.1f} s "
             f"({(iterations - start) / max(elapsed, 1e-9):.1f} it/s)")
    ctx.metrics.setdefault("wall_time_s", {})[stage] = round(earlier + elapsed, 2)
