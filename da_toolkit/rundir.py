"""The run directory and who may write it.

A run directory has one writer at a time: `da-toolkit run` (also with ``--resume``, also as a
cell of ``compare``) holds `RunDirLock` on it for the whole run. The lock is an ``fcntl.flock``
on ``<run dir>/.lock``, so the operating system releases it when the holder dies, however it
dies: a crash or ``kill -9`` never leaves a stale lock. The holder writes its process id into the
file, so a refused writer can say who holds the directory. Readers (``evaluate``, ``show``,
``translate``, ``compare``'s report) take no lock.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from da_toolkit.errors import UserError

LOCK_NAME = ".lock"


class RunDirLock:
    """The exclusive write lock of one run directory (created when missing); a context manager.

    ``acquire()`` raises UserError naming the directory and the holding process when another
    process holds it. ``release()`` removes the lock file, and the directory too when acquire()
    created it and the run left nothing else in it (a start refused before anything was written
    leaves no trace).
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self._created = False  # whether acquire() made the directory (release() then removes it if left empty)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunDirLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.run_dir}: lock already held by this object")
        while True:
            if not self.run_dir.is_dir():
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self._created = True
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the previous holder removed the emptied directory just now
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise UserError(f"{self.run_dir} is being written by another process "
                                f"({'PID ' + holder if holder else 'PID unknown'}); wait for it to finish or "
                                f"stop it, or use --output DIR") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # we locked a lock file its holder had removed on release: take the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (idempotent). The file is removed while still locked, so a process
        waiting on the old file sees that it is gone and takes a fresh one."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.path.unlink(missing_ok=True)
            if self._created:
                try:
                    self.run_dir.rmdir()  # only succeeds when the run wrote nothing
                except OSError:
                    pass
        finally:
            os.close(fd)

    def __enter__(self) -> RunDirLock:
        return self if self.held else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_run_dir(run_dir: str | Path) -> RunDirLock:
    """Hold the write lock of `run_dir` (``with lock_run_dir(path): ...``); UserError when another process does."""
    return RunDirLock(run_dir).acquire()


def _read_pid(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text if text.isdigit() else ""


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (on_disk.st_dev, on_disk.st_ino)
