"""Cells on a cluster: each cell one Slurm job submitted through submitit (`compare --executor slurm`).

The job runs the same command a local cell process runs (``python -m da_toolkit.benchmark run
... -o <run dir> -q [--resume]``, its output appended to the cell's cell.log) as a plain
`submitit.helpers.CommandFunction`, so the only thing unpickled on the node is submitit's own
wrapper around a list of strings. The node must see the same file system (the checkout, the
Python environment, the benchmark directory), as on any Slurm cluster with a shared home.

`run_cells` drives the jobs exactly as it drives local processes: `ClusterJob` answers its
poll / send_signal / wait. So finished cells are skipped and started ones resumed, and a cell
that reuses a translator (or reads another cell's run) is submitted only once that cell has finished.
Ctrl-C cancels the submitted jobs (`scancel`: Slurm sends SIGTERM, then SIGKILL); a cancelled
or timed-out cell resumes from its last checkpoint (`train.checkpoint_every`) on the next run.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from da_toolkit.benchmark.grid import Cell
from da_toolkit.benchmark.scheduler import cell_argv, start_attempt
from da_toolkit.errors import UserError


@dataclass(frozen=True)
class ClusterOptions:
    """What each cell's job asks of the scheduler. cluster: 'slurm', or 'local' for submitit's
    LocalExecutor (the same path on this machine: tests, a dry run of the set-up)."""

    partition: str | None = None
    time_min: int = 24 * 60
    gpus: int = 1
    cpus: int = 8
    mem_gb: int | None = None
    cluster: str = "slurm"

    def arguments(self) -> list[str]:
        """The `compare` options that ask for these settings (for the command line in results.md)."""
        return ["--executor", self.cluster, *(["--slurm-partition", self.partition] if self.partition else []),
                "--slurm-time", str(self.time_min), "--slurm-gpus", str(self.gpus), "--slurm-cpus", str(self.cpus),
                *(["--slurm-mem-gb", str(self.mem_gb)] if self.mem_gb else [])]


def parse_minutes(text: str) -> int:
    """A Slurm time limit as minutes: '90', '1:30:00' (H:MM:SS) or '2-00:00:00' (D-HH:MM:SS)."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d\d):(\d\d)", text.strip())
    if match:
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        total = days * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    elif text.strip().isdigit():
        total = int(text)
    else:
        raise UserError(f"--slurm-time: expected minutes (90), H:MM:SS (1:30:00) or D-HH:MM:SS, got '{text}'")
    if total <= 0:
        raise UserError(f"--slurm-time: must be more than zero, got '{text}'")
    return total


class ClusterLauncher:
    """A `run_cells` launcher that submits each cell as a job of `options`; submitit's files in `folder`."""

    def __init__(self, folder: Path, options: ClusterOptions):
        import submitit

        self.submitit = submitit
        self.options = options
        try:
            self.executor = submitit.AutoExecutor(folder=Path(folder) / "%j", cluster=options.cluster)
        except RuntimeError as error:  # submitit: 'Could not detect "srun", are you indeed on a slurm cluster?'
            raise UserError(f"--executor {options.cluster}: {error} (run compare on a node that submits Slurm "
                            f"jobs, e.g. the cluster's login node)") from None
        self.executor.update_parameters(
            name="da-toolkit-cell", timeout_min=options.time_min, gpus_per_node=options.gpus, tasks_per_node=1,
            cpus_per_task=options.cpus, **({"mem_gb": options.mem_gb} if options.mem_gb else {}),
            **({"slurm_partition": options.partition} if options.partition else {}))

    def __call__(self, cell: Cell, env: dict) -> "ClusterJob":
        """Submit `cell` (`env`, the local processes' environment, is not used: a job has its node's)."""
        start_attempt(cell)
        # the shell appends everything the run prints to cell.log, where run_cells reads a failure from
        script = f'export OMP_NUM_THREADS="${{OMP_NUM_THREADS:-{self.options.cpus}}}"; ' \
                 f'exec "$@" >> {shlex.quote(str(cell.log_path))} 2>&1'
        command = self.submitit.helpers.CommandFunction(["/bin/sh", "-c", script, "sh", *cell_argv(cell)],
                                                        cwd=os.getcwd(), verbose=False)
        return ClusterJob(self.executor.submit(command), cell.log_path)


class ClusterJob:
    """A submitted job seen as the process `run_cells` polls: poll(), returncode, send_signal(), kill(), wait()."""

    def __init__(self, job, log_path: Path):
        self.job = job
        self.log_path = log_path
        self.returncode: int | None = None

    def poll(self) -> int | None:
        from submitit.core.utils import FailedJobError

        if self.returncode is None and self.job.done():
            error = self.job.exception()
            self.returncode = 0 if error is None else 1
            if error is not None and not isinstance(error, FailedJobError):  # FailedJobError: the run failed
                # the scheduler ended the job (time limit, node failure, cancel): say so where the error is read
                reason = (str(error).strip() or type(error).__name__).splitlines()[0]
                with open(self.log_path, "a") as log:
                    log.write(f"error: job {self.job.job_id} ended before the run did ({self.job.state}): {reason}\n")
        return self.returncode

    def send_signal(self, signum: int) -> None:
        self.job.cancel(check=False)

    def kill(self) -> None:
        self.job.cancel(check=False)

    def wait(self) -> int:
        while self.poll() is None:
            self.job.wait()
        return self.returncode
