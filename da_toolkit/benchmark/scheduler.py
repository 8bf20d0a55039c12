"""Running cells, each in a process of its own, `--jobs` at a time; Ctrl-C, and cells that die with compare."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

if TYPE_CHECKING:  # a cell process imports this module to die with its launcher: no torch for that
    from da_toolkit.benchmark.grid import Cell

SCHEDULER_POLL_S = 0.2


@dataclass
class Outcome:
    status: str  # done | failed | blocked | interrupted | not run | running (another process; compare --finished)
    error: str | None = None


def child_environment(jobs: int) -> dict:
    """The environment of a cell process: CPU threads split between the jobs unless the user set them."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    return env


LAUNCHER_ENV = "DA_TOOLKIT_LAUNCHER_PID"  # set in a cell's environment: the compare process it must die with
LAUNCHER_POLL_S = 1.0
LAUNCHER_GRACE_S = 30.0  # after its launcher died, the time a cell has to save a checkpoint before SIGKILL
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def launch_cell(cell: Cell, env: dict, argv: list[str] | None = None) -> subprocess.Popen:
    """Start `da-toolkit run` for `cell` (or `argv`) in a process of its own, its output appended to cell.log.

    The process gets a session of its own, so a Ctrl-C at the terminal reaches it only through
    run_cells, once. Its environment names this process as its launcher: the cell entry point
    (``python -m da_toolkit.benchmark``, __main__.py) calls die_with_launcher, so the cell stops
    when compare dies, even by SIGKILL.
    """
    argv = argv or cell_argv(cell)
    start_attempt(cell)
    with open(cell.log_path, "a") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**env, LAUNCHER_ENV: str(os.getpid())},
                                start_new_session=True)


def cell_argv(cell: Cell) -> list[str]:
    """The command of a cell process: ``python -m da_toolkit.benchmark <da-toolkit run arguments>``."""
    return [sys.executable, "-m", "da_toolkit.benchmark", *cell.arguments()]


def start_attempt(cell: Cell) -> None:
    """Create the cell's run directory and open a new attempt in its cell.log (a '=== time command' line)."""
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    with open(cell.log_path, "a") as log:
        log.write(f"=== {datetime.now().isoformat(timespec='seconds')} {cell.command_line()}\n")


def die_with_launcher(poll_s: float = LAUNCHER_POLL_S, grace_s: float = LAUNCHER_GRACE_S) -> None:
    """In a cell process: stop when the compare process that launched it dies, however it dies.

    On Linux the kernel sends the cell SIGINT when its parent dies (prctl PR_SET_PDEATHSIG); the
    run then saves a checkpoint after its current step and exits, like after a Ctrl-C. Everywhere
    a daemon thread also watches the parent: once it is gone, the thread sends SIGINT itself
    where the kernel could not, and SIGKILL after `grace_s` if the cell is still alive. A process
    not started by launch_cell (no DA_TOOLKIT_LAUNCHER_PID) is left alone.
    """
    launcher = os.environ.pop(LAUNCHER_ENV, None)
    if not (launcher and launcher.isdigit()):
        return
    launcher = int(launcher)
    kernel_signals = _set_parent_death_signal(signal.SIGINT)
    if os.getppid() != launcher:  # the launcher died before the signal was armed
        os._exit(130)
    threading.Thread(target=_watch_launcher, args=(launcher, kernel_signals, poll_s, grace_s), daemon=True,
                     name="watch-launcher").start()


def _set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send `signum` when the parent dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_launcher(launcher: int, kernel_signals: bool, poll_s: float, grace_s: float) -> None:
    while os.getppid() == launcher:
        time.sleep(poll_s)
    if not kernel_signals:
        os.kill(os.getpid(), signal.SIGINT)
    time.sleep(grace_s)
    os.kill(os.getpid(), signal.SIGKILL)


def last_error_line(log_path: Path) -> str:
    """The last non-empty line of the cell log's latest attempt (the error a failed run printed)."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    attempt = text.rsplit("\n=== ", 1)[-1].splitlines()[1:]
    lines = [line.strip() for line in attempt if line.strip()]
    return lines[-1] if lines else "no output (see the cell log)"


def _saved_recipe(cell: Cell) -> dict:
    from da_toolkit.rundir import RunDir

    return RunDir(cell.run_dir).read_recipe()


def settled_outcome(cell: Cell) -> Outcome | None:
    """A cell's outcome that its run directory already settles: failed when it holds a run of another recipe
    (not this cell's to skip or resume), done when the run finished (also a run that trained its own translator
    where the grid has an owner's to reuse: `compare --only` without the owner's cells); None otherwise."""
    changed = cell.changed_keys()
    if changed == ["pixel_from"] and cell.finished and _saved_recipe(cell).get("pixel_from") is None:
        return Outcome("done")  # it trained its own translator (`--only` left the owner out): the same recipe
    if changed:
        return Outcome("failed", f"{cell.run_dir} holds a run of a different recipe (differs in: "
                                 f"{', '.join(changed)}); delete it or pass -o DIR for a new benchmark")
    return Outcome("done") if cell.finished else None


def recorded_outcomes(cells: list[Cell]) -> dict[Cell, Outcome]:
    """What the run directories say of the cells that were tried, running nothing (`compare --finished`):
    done (metrics.json), running (another process holds the run's lock), else failed with the last line
    its cell log printed (a run the divergence guard stopped, a crash, a kill), or failed when the run
    directory holds another recipe's run. Cells never tried are left out."""
    from da_toolkit.rundir import being_written

    outcomes = {}
    for cell in cells:
        settled = settled_outcome(cell)
        if settled is not None:
            outcomes[cell] = settled
        elif being_written(cell.run_dir):
            outcomes[cell] = Outcome("running", f"still running (log: {cell.log_path})")
        elif cell.log_path.exists():
            outcomes[cell] = Outcome("failed", f"{last_error_line(cell.log_path)} (log: {cell.log_path})")
    return outcomes


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def stop_signals():
    """SIGINT and SIGTERM both stop a benchmark cleanly, even when it was started in the background
    (where the shell makes it ignore SIGINT), so `kill PID` and Ctrl-C behave the same."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_keyboard_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_cells(cells: list[Cell], jobs: int, outcomes: dict[Cell, Outcome], launch=launch_cell,
              env: dict | None = None) -> None:
    """Run the unfinished cells, `jobs` at a time; a cell waits for its prerequisites (the owner of the
    translator it shares, the cells whose runs it reads), which start first.

    Fills `outcomes` with every cell's outcome as it becomes known (finished cells are skipped;
    a run directory started with another recipe is a failure). Ctrl-C (or SIGTERM) sends SIGINT
    to the running cells (each saves a checkpoint and exits), waits for them and raises Interrupted.
    """
    from da_toolkit.training.loop import Interrupted

    env = env if env is not None else child_environment(jobs)
    for cell in cells:
        settled = settled_outcome(cell)
        if settled is not None:
            outcomes[cell] = settled
    needed = {prerequisite for cell in cells for prerequisite in cell.prerequisites}
    pending = sorted((c for c in cells if c not in outcomes), key=lambda c: (c not in needed, cells.index(c)))
    running: dict[Cell, subprocess.Popen] = {}
    bar = tqdm(total=len(cells), initial=len(outcomes), unit="cell",
               desc="cells", smoothing=0, dynamic_ncols=True, file=sys.stderr)

    def finish(cell: Cell, outcome: Outcome) -> None:
        outcomes[cell] = outcome
        bar.update(1)
        if outcome.status != "done":
            tqdm.write(f"{outcome.status}: {cell.name}: {outcome.error}", file=sys.stderr)

    def show() -> None:
        failed = sum(o.status in ("failed", "blocked") for o in outcomes.values())
        text = f"done {sum(o.status == 'done' for o in outcomes.values())}, running {len(running)}, failed {failed}"
        if text != bar.postfix:  # redraw on change only: a log file gets one line per change, not per poll
            bar.set_postfix_str(text)

    with stop_signals():
        try:
            while pending or running:
                for cell, process in list(running.items()):
                    if process.poll() is not None:
                        del running[cell]
                        finish(cell, Outcome("done") if process.returncode == 0 and cell.finished
                               else Outcome("failed", f"{last_error_line(cell.log_path)} (log: {cell.log_path})"))
                for cell in list(pending):
                    blocker = next((p for p in cell.prerequisites if not p.finished and (
                        p not in cells or (p in outcomes and outcomes[p].status != "done"))), None)
                    if blocker is not None:
                        pending.remove(cell)
                        uses = ("whose translator it shares" if blocker in (cell.owner, cell.after)
                                else "whose run it reads")
                        finish(cell, Outcome("blocked", f"not run: {blocker.name}, {uses}, did not finish"
                                                        + ("" if blocker in cells else " (not selected)")))
                for cell in [c for c in pending if all(p.finished for p in c.prerequisites)][:jobs - len(running)]:
                    pending.remove(cell)
                    running[cell] = launch(cell, env)
                show()
                time.sleep(SCHEDULER_POLL_S)
        except KeyboardInterrupt:
            bar.close()
            stopped = _stop(running)
            for cell in stopped:
                outcomes[cell] = Outcome("interrupted", "stopped by Ctrl-C after saving a checkpoint")
            for cell in pending:
                outcomes[cell] = Outcome("not run", "stopped by Ctrl-C before it started")
            raise Interrupted(f"{len(stopped)} running cell(s) saved a checkpoint and stopped; run the same command "
                              f"again to continue (finished cells are skipped, interrupted ones resumed)") from None
    bar.close()


def _stop(running: dict[Cell, subprocess.Popen]) -> list[Cell]:
    """SIGINT to every running cell (train_loop checkpoints and exits), then wait; a second Ctrl-C kills them."""
    tqdm.write(f"Ctrl-C: stopping {len(running)} running cell(s) after their current step "
               f"(Ctrl-C again to kill them)", file=sys.stderr)
    for process in running.values():
        process.send_signal(signal.SIGINT)
    try:
        for process in running.values():
            process.wait()
    except KeyboardInterrupt:
        for process in running.values():
            process.kill()
            process.wait()
    return list(running)
