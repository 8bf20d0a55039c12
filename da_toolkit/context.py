"""`Context`: what an adapter needs from a run besides its data — device, precision, seed,
logging (TensorBoard + log file), progress bars, checkpoint locations and the run's metrics."""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from da_toolkit.errors import UserError
from da_toolkit.rundir import RunDir
from da_toolkit.training.distributed import distribute
from da_toolkit.training.precision import Precision


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cuda' without a GPU is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"train.device: '{name}' is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device: '{name}' asked for, but this machine has no CUDA GPU; use auto or cpu")
    return device


@dataclass
class Context:
    run_dir: Path
    device: torch.device = torch.device("cpu")
    seed: int = 0
    precision: Precision | None = None  # resolved (training/precision.py); None: fp32 on `device`
    log_every: int = 50
    checkpoint_every: int = 500
    resume: bool = False
    progress: bool = True
    pixel_from: Path | None = None  # a run directory whose pixel stage (checkpoints, cache) this run reuses
    metrics: dict = field(default_factory=dict)  # what stages report for metrics.json
    earlier_wall_time: float = 0.0  # seconds this run's stages trained before the process that resumed them
    # whether this process writes the run directory (log, TensorBoard, checkpoints, caches): rank 0 of
    # several processes (training/distributed.py); the others read checkpoints only and print nothing
    main: bool = True
    # scores the candidates of the stages that train the returned classifier (feature, refine) and keeps the
    # chosen one (selection.py); None: no selection
    selection: object | None = None

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)
        if self.precision is None:
            self.precision = Precision("fp32", self.device)
        self.run = RunDir(self.run_dir)
        self.pixel_home = self.run.pixel_home(None if self.pixel_from is None else str(self.pixel_from))
        self.progress = self.progress and self.main
        self._writer = None
        self.logger = logging.getLogger(f"da_toolkit.run.{self.run_dir.resolve()}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self.logger.disabled = not self.main
        if not self.main:
            self._writer = _NoWriter()
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.logger.handlers:
            handler = logging.FileHandler(self.run.log_file)
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            self.logger.addHandler(handler)

    # -- logging ---------------------------------------------------------------------------
    @property
    def writer(self):
        """TensorBoard SummaryWriter on run_dir/tensorboard, created on first use."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run.tensorboard_dir))
        return self._writer

    def log_scalars(self, stage: str, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(f"{stage}/{name}", value, step)

    def info(self, message: str) -> None:
        """A line for the user (stderr, above any progress bar) and the run's log file."""
        self.logger.info(message)
        if self.progress:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)

    def distribute(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module` set up to train data-parallel over the processes torchrun started; returns what the
        training steps call (a DistributedDataParallel wrapper; `module` itself in one process), see
        training/distributed.py. Call it before building the module's optimiser."""
        return distribute(module, self.device)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)

    # -- places and precision -------------------------------------------------------------------
    def _home(self, stage: str) -> RunDir:
        """The run directory that owns `stage`: the pixel home (`pixel_from`) for pixel stages, else this run."""
        return self.pixel_home if stage.startswith("pixel") else self.run

    def checkpoint_path(self, stage: str) -> Path:
        return self._home(stage).checkpoint(stage)

    def is_shared(self, stage: str) -> bool:
        """Whether `stage` belongs to another run directory (a pixel stage shared through `pixel_from`)."""
        return self._home(stage) != self.run

    def restores(self, stage: str) -> bool:
        """Whether `stage` starts from its checkpoint: on --resume, and always for a shared pixel stage."""
        return self.resume or self.is_shared(stage)

    @property
    def cache_dir(self) -> Path:
        """Where the pixel stage caches translated images (shared along with the pixel stage)."""
        return self.pixel_home.cache_dir

    def autocast(self):
        """The forward passes' mixed precision (bf16 or fp16 autocast), a no-op in fp32."""
        return self.precision.autocast()

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """One optimisation step on `loss` (zero_grad, backward, step), through a gradient scaler in fp16."""
        self.precision.backward_step(loss, optimizer)


class _NoWriter:
    """The TensorBoard writer of a process that does not write the run directory: drops everything."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None
