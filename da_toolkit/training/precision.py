"""Numeric precision of a run (`train.precision`): fp32, bf16 or fp16 mixed precision, or auto.

* ``fp32``: no autocast; every op in float32.
* ``bf16``: forward passes under ``torch.autocast(device, bfloat16)`` (matrix products and
  convolutions in bfloat16, reductions and losses in float32), weights and optimiser state in
  float32. bfloat16 has float32's exponent range, so gradients need no scaling. On a CUDA GPU it
  needs native support (Ampere or newer); on the CPU it runs through CPU autocast.
* ``fp16``: autocast to float16, and every optimiser steps through its own
  ``torch.amp.GradScaler``: the loss is multiplied by a scale S before `backward`, the gradients
  are divided by S before the step, and a step whose gradients hold an inf or NaN is skipped and
  S halved (S doubles after 2,000 steps without one). The scalers are part of each stage's
  checkpoint (`train_loop`), so a resumed run scales exactly as an uninterrupted one. A recipe
  asking for fp16 on the CPU is refused: CPUs have no fast half-precision kernels (a LeNet step took
  2.7 s against 65 ms in fp32 and 42 ms in bf16 on this project's CPU). `Precision("fp16", "cpu")`
  itself works (CPU autocast, ``GradScaler("cpu")``), which is how the tests check the scaler.
* ``auto``: bf16 on a CUDA GPU that has it, else fp16 on CUDA; fp32 on the CPU.
* ``amp``: deprecated spelling of ``auto`` (a warning says so).

Evaluation always runs in float32; the translation of a pixel stage runs in the run's precision
(and its cache entries are keyed by it).
"""
from __future__ import annotations

import contextlib
import warnings
import weakref

import torch

from da_toolkit.errors import UserError

SCHEDULER_BEFORE_OPTIMIZER = r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`"
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_DEPRECATION = "train.precision: 'amp' is deprecated and means 'auto' (bf16, else fp16 on CUDA; fp32 on the CPU); " \
                  "write precision: auto, or bf16 / fp16 / fp32 to choose"


def cuda_has_bf16(device: torch.device) -> bool:
    """Whether the CUDA GPU computes bfloat16 natively (not emulated, which is slower than fp32)."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def requested_precision(name: str) -> str:
    """The recipe's `train.precision` with the deprecated alias spelled out: amp -> auto."""
    return "auto" if name == "amp" else name


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision a run uses: fp32, bf16 or fp16, from the recipe's `train.precision` and the device.

    auto (or the deprecated amp): bf16 > fp16 on CUDA, fp32 elsewhere. A UserError: fp16 on the CPU
    (see the module docstring), bf16 on a CUDA GPU without native bfloat16."""
    requested = requested_precision(requested)
    if requested == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if cuda_has_bf16(device) else "fp16"
    if requested not in DTYPES:
        raise UserError(f"train.precision: '{requested}' is not a precision (auto, fp32, bf16, fp16)")
    if requested == "fp16" and device.type == "cpu":
        raise UserError("train.precision: fp16 on the CPU is about 40 times slower than fp32 (CPUs have no fast "
                        "float16 kernels); use bf16 or fp32 on the CPU, or auto (fp32 here, bf16 or fp16 on a GPU)")
    if requested == "bf16" and device.type == "cuda" and not cuda_has_bf16(device):
        raise UserError(f"train.precision: bf16 asked for, but this GPU ({device}) has no native bfloat16 (Ampere "
                        f"and newer GPUs have it); use fp16 (with gradient scaling), auto or fp32")
    return requested


class Precision:
    """A resolved precision on a device: the autocast context and, in fp16, one GradScaler per optimiser.

    `backward_step(loss, optimizer)` is every optimisation step of the toolkit: zero the gradients,
    back-propagate, step (through the optimiser's scaler in fp16). `scalers(state)` gives the scalers
    of the optimisers among a stage's Stateful objects, which `train_loop` checkpoints with it.
    """

    def __init__(self, name: str = "fp32", device: torch.device | str = "cpu"):
        if name not in DTYPES:
            raise ValueError(f"unresolved precision {name!r}: one of {', '.join(DTYPES)} (see resolve_precision)")
        self.name = name
        self.device = torch.device(device)
        self.dtype = DTYPES[name]
        self._scalers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # optimiser -> its GradScaler
        if self.scales_gradients:
            # a scaler skips the first step(s) while it finds its scale, and the LR scheduler, stepped every
            # iteration, would warn that it stepped before the optimiser: expected here, not a user error
            warnings.filterwarnings("ignore", SCHEDULER_BEFORE_OPTIMIZER, UserWarning)

    def __repr__(self) -> str:
        return f"Precision({self.name!r}, {str(self.device)!r})"

    @property
    def scales_gradients(self) -> bool:
        return self.name == "fp16"

    def autocast(self):
        """Mixed precision (bf16 or fp16) for the forward passes; a no-op in fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def scaler(self, optimizer: torch.optim.Optimizer) -> torch.amp.GradScaler | None:
        """`optimizer`'s gradient scaler (made on first use), or None unless fp16."""
        if not self.scales_gradients:
            return None
        if optimizer not in self._scalers:
            self._scalers[optimizer] = torch.amp.GradScaler(self.device.type)
        return self._scalers[optimizer]

    def scalers(self, state: dict) -> dict[str, torch.amp.GradScaler]:
        """{key: scaler} for every optimiser among `state`'s values (empty unless fp16)."""
        return {key: self.scaler(obj) for key, obj in state.items()
                if isinstance(obj, torch.optim.Optimizer) and self.scales_gradients}

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """zero_grad, loss.backward(), optimizer.step(); in fp16 with the loss scaled by the optimiser's
        GradScaler, the step skipped when a gradient is not finite, and the scale updated."""
        optimizer.zero_grad(set_to_none=True)
        scaler = self.scaler(optimizer)
        if scaler is None:
            loss.backward()
            optimizer.step()
            return
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
