"""One writer per run directory (rundir.RunDirLock) and compare cells that die with their launcher."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from conftest import toy_recipe_dict
from da_toolkit.cli import main
from da_toolkit.errors import UserError
from da_toolkit.pipeline import run
from da_toolkit.recipe import load_recipe
from da_toolkit.rundir import LOCK_NAME, RunDirLock, lock_run_dir

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def python(code: str, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, **popen)


def wait_for(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its new parent, counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


HOLD_LOCK = ("import sys, time\n"
             "from da_toolkit.rundir import lock_run_dir\n"
             "lock_run_dir(sys.argv[1])\n"
             "print('locked', flush=True)\n"
             "time.sleep(120)\n")


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock of tmp_path/run (killed with SIGKILL at the end if still alive)."""
    run_dir = tmp_path / "run"
    process = python(HOLD_LOCK, str(run_dir), stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "locked\n"
    yield run_dir, process
    process.kill()
    process.wait()


def test_a_second_writer_is_refused_until_the_first_is_killed(holder):
    run_dir, process = holder
    assert (run_dir / LOCK_NAME).read_text() == f"{process.pid}\n"
    with pytest.raises(UserError) as refused:
        lock_run_dir(run_dir)
    assert str(refused.value) == (f"{run_dir} is being written by another process (PID {process.pid}); wait for it "
                                  f"to finish or stop it, or use --output DIR")

    process.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel drops the lock with the process
    process.wait()
    assert (run_dir / LOCK_NAME).exists()
    with lock_run_dir(run_dir) as lock:
        assert lock.held and (run_dir / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert list(run_dir.iterdir()) == []  # released: the lock file is gone (the directory is the killed holder's)


def test_release_keeps_what_the_run_wrote_and_a_released_lock_is_free_again(tmp_path):
    run_dir = tmp_path / "run"
    first = lock_run_dir(run_dir)
    (run_dir / "metrics.json").write_text("{}")
    with pytest.raises(UserError, match=f"PID {os.getpid()}"):  # a second holder in the same process too
        RunDirLock(run_dir).acquire()
    first.release()
    first.release()  # idempotent
    assert sorted(p.name for p in run_dir.iterdir()) == ["metrics.json"]
    with RunDirLock(run_dir):
        pass
    assert run_dir.is_dir()  # it existed before the second lock: never removed by it
    with lock_run_dir(tmp_path / "new" / "run"):
        assert (tmp_path / "new" / "run" / LOCK_NAME).exists()
    assert not (tmp_path / "new" / "run").exists()  # made by the lock, nothing written: removed with it


def test_run_on_a_locked_directory_writes_nothing(holder, write_recipe):
    run_dir, process = holder
    with pytest.raises(UserError, match=f"PID {process.pid}"):
        run(load_recipe(write_recipe()), run_dir, resume=True, progress=False)
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]


@pytest.mark.parametrize("flags", [[], ["--resume"]])
def test_cli_run_and_resume_on_a_locked_directory_exit_2_with_one_line(holder, tmp_path, flags):
    run_dir, process = holder
    data = {"source": {"name": "ucidigits", "limit": 50}, "target": {"name": "ucidigits", "limit": 50},
            "target_test": {"name": "ucidigits", "split": "test", "limit": 50}}
    recipe = tmp_path / "uci.yaml"
    recipe.write_text(yaml.safe_dump(toy_recipe_dict(data=data)))
    refused = CliRunner().invoke(main, ["run", str(recipe), "-o", str(run_dir), "-q", *flags])
    assert refused.exit_code == 2 and refused.stdout == ""
    assert refused.stderr == f"error: {run_dir} is being written by another process (PID {process.pid}); wait for it to " \
                  f"finish or stop it, or use --output DIR\n"


# ---------------------------------------------------------------------------------------------- compare


COMPARE = """
import sys
import conftest  # registers the toy domains in this process
from da_toolkit import benchmark as bench

CELL = '''
import os, pathlib, sys, time
from da_toolkit.benchmark import die_with_launcher
die_with_launcher()
pathlib.Path(sys.argv[1], "pid").write_text(str(os.getpid()))
time.sleep(120)
'''

def launch(cell, env):
    return bench.launch_cell(cell, env, [sys.executable, "-c", CELL, str(cell.run_dir)])

bench.compare(sys.argv[1], jobs=2, output=sys.argv[2], launch=launch)
"""


def test_compare_killed_with_sigkill_leaves_no_cell_alive(tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "toy_source_only.yaml").write_text(yaml.safe_dump(toy_recipe_dict()))
    bench_file = tmp_path / "bench.yaml"
    bench_file.write_text(yaml.safe_dump({"name": "toy", "recipe_dir": "recipes", "tasks": ["toy"],
                                          "methods": ["source_only"], "seeds": [0, 1, 2]}))
    compare = python(COMPARE, str(bench_file), str(tmp_path / "b"), stderr=subprocess.DEVNULL)
    pid_files = [tmp_path / "b" / "runs" / "toy" / "source_only" / f"seed{s}" / "pid" for s in (0, 1)]
    try:
        wait_for(lambda: all(p.exists() and p.read_text() for p in pid_files), what="two running cells")
        cells = [int(p.read_text()) for p in pid_files]
        assert all(alive(pid) for pid in cells)
    finally:
        compare.send_signal(signal.SIGKILL)
        compare.wait()
    wait_for(lambda: not any(alive(pid) for pid in cells), timeout=5, what="the cells to die with compare")


WATCHED_CELL = """
import os, pathlib, signal, sys, threading, time
from da_toolkit.benchmark.scheduler import _watch_launcher
folder = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGINT, lambda *a: folder.joinpath("got_sigint").touch())  # a cell that does not stop on SIGINT
threading.Thread(target=_watch_launcher, args=(os.getppid(), False, 0.05, 0.5), daemon=True).start()
folder.joinpath("pid").write_text(str(os.getpid()))
while True:
    time.sleep(0.05)
"""


def test_without_a_kernel_parent_death_signal_the_watcher_sends_sigint_then_sigkill(tmp_path):
    """The fallback where prctl is missing (not Linux): the cell's own thread notices the launcher is
    gone, sends SIGINT, and SIGKILL after the grace period when the cell is still alive."""
    launcher = python(f"import subprocess, sys, time\n"
                      f"subprocess.Popen([sys.executable, '-c', {WATCHED_CELL!r}, {str(tmp_path)!r}])\n"
                      f"time.sleep(120)\n")
    try:
        wait_for(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text(), what="the cell")
        cell = int((tmp_path / "pid").read_text())
        time.sleep(0.3)
        assert alive(cell) and not (tmp_path / "got_sigint").exists()
    finally:
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
    wait_for(lambda: not alive(cell), timeout=5, what="the cell to die")
    assert (tmp_path / "got_sigint").exists()


def test_a_compare_cell_on_a_locked_run_directory_fails_naming_the_holder(tmp_path):
    from da_toolkit import benchmark as bench

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    data = {"source": {"name": "ucidigits", "limit": 50}, "target": {"name": "ucidigits", "limit": 50},
            "target_test": {"name": "ucidigits", "split": "test", "limit": 50}}
    (recipes / "uci_source_only.yaml").write_text(yaml.safe_dump(toy_recipe_dict(data=data)))
    bench_file = tmp_path / "bench.yaml"
    bench_file.write_text(yaml.safe_dump({"name": "uci", "recipe_dir": "recipes", "tasks": ["uci"],
                                          "methods": ["source_only"], "seeds": [0]}))
    run_dir = (tmp_path / "b" / "runs" / "uci" / "source_only" / "seed0").resolve()
    with lock_run_dir(run_dir):
        with pytest.raises(UserError) as failed:
            bench.compare(bench_file, output=tmp_path / "b")
    assert str(failed.value).startswith(f"1 of 1 cells did not finish: uci/source_only/seed0: error: {run_dir} is "
                                        f"being written by another process (PID {os.getpid()});")
    assert not (run_dir / "recipe.yaml").exists()
