"""`RunDir`: the one owner of a run directory — its layout, whether a run may start there, and
every file read or written in it.

    recipe.yaml            the resolved recipe, written when training starts
    checkpoints/<stage>.pt one per stage (written by `train_loop`); their presence means "started"
    cache/                 translated source images of the pixel stage
    classifier.pt          the trained classifier: weights, class count, recipe
    metrics.json           written last: its presence means "finished"
    rescored.json          validators added after the run, of the returned model (`da-toolkit rescore`)
    tensorboard/, log.txt  what the run logged

A pixel stage shared through a recipe's `pixel_from` lives in another run directory: its
`RunDir` is the run's `pixel_home`. This module knows nothing of recipes' schema or models: it
reads and writes plain data (recipe dicts, state dicts), so that every layer above can use it.

A run directory has one writer at a time: `da-toolkit run` (also with ``--resume``, also as a
cell of ``compare``) holds `RunDirLock` on it for the whole run. The lock is an ``fcntl.flock``
on ``<run dir>/.lock``, so the operating system releases it when the holder dies, however it
dies: a crash or ``kill -9`` never leaves a stale lock. The holder writes its process id into the
file, so a refused writer can say who holds the directory. ``rescore`` holds it while it scores and
writes rescored.json. Readers (``evaluate``, ``show``, ``translate``, ``report``, ``compare``'s report)
take no lock.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Callable

import yaml

from da_toolkit.errors import UserError
from da_toolkit.training.checkpoint import (load_checkpoint, read_json, read_yaml, save_checkpoint, write_json_atomic,
                                            write_text_atomic)


class RunDir:
    """The run directory at `path` (it need not exist yet)."""

    OUTPUTS = ("metrics.json", "rescored.json", "classifier.pt", "checkpoints", "cache", "tensorboard", "log.txt")

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    def __eq__(self, other) -> bool:
        return isinstance(other, RunDir) and self.path.resolve() == other.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    # -- layout ---------------------------------------------------------------------------------
    @property
    def recipe_file(self) -> Path:
        return self.path / "recipe.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def classifier_file(self) -> Path:
        return self.path / "classifier.pt"

    @property
    def rescored_file(self) -> Path:
        return self.path / "rescored.json"

    @property
    def log_file(self) -> Path:
        return self.path / "log.txt"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    def checkpoint(self, stage: str) -> Path:
        return self.path / "checkpoints" / f"{stage}.pt"

    # -- state ----------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.metrics_file.exists()

    @property
    def started(self) -> bool:
        """Whether a run trained here: a directory holding only recipe.yaml (a start that failed before
        training, e.g. on missing data files) has not started, and does not block a retry."""
        return self.finished or any((self.path / "checkpoints").glob("*.pt"))

    def check_start(self, recipe: dict, resume: bool, overwrite: bool,
                    normalise: Callable[[dict], dict] | None = None) -> None:
        """Refuse to silently replace a run; on resume, refuse a recipe that differs from the saved one
        (see `recipe_changes`). Changes nothing (`clear` removes an old run's outputs for --overwrite)."""
        if overwrite or not self.started or not self.recipe_file.exists():
            return
        if not resume:
            state = "a finished run (metrics.json)" if self.finished else "an unfinished run"
            raise UserError(f"{self} already holds {state}; pass --resume to continue it, --overwrite to replace it, "
                            f"or --output DIR for a new run")
        changed = self.recipe_changes(recipe, normalise)
        if changed:
            raise UserError(f"--resume: the recipe differs from the one {self} was started with in: "
                            f"{', '.join(changed)}; resume with the same recipe and overrides, or use --output DIR")

    def clear(self) -> None:
        """--overwrite: remove every output of an earlier run (not other files a user put here)."""
        for name in self.OUTPUTS:
            path = self.path / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def require(self, *names: str) -> None:
        """A UserError unless the files `names` are here (reading a finished run)."""
        for name in names:
            if not (self.path / name).exists():
                raise UserError(f"{self}: no {name} here; is this a finished da-toolkit run directory?")

    def pixel_home(self, pixel_from: str | None) -> "RunDir":
        """Where the pixel stage of a run with this `pixel_from` lives: that run directory, or this one."""
        if pixel_from is None:
            return self
        home = RunDir(pixel_from)
        if not (home.path / "checkpoints").is_dir():
            raise UserError(f"pixel_from: {home} holds no checkpoints/ of a pixel stage")
        return home

    # -- files ----------------------------------------------------------------------------------
    def write_recipe(self, recipe: dict) -> None:
        write_text_atomic(self.recipe_file, yaml.safe_dump(recipe, sort_keys=False))

    def read_recipe(self) -> dict:
        """The saved recipe as a dict (safe YAML); validate it with `recipe_from_dict`."""
        self.require("recipe.yaml")
        return read_yaml(self.recipe_file, "recipe")

    def recipe_changes(self, recipe: dict, normalise: Callable[[dict], dict] | None = None) -> list[str]:
        """Top-level keys (but output_dir) in which the resolved `recipe` differs from the saved one.

        `normalise` (`recipe.normalised_recipe`) reads the saved recipe through today's schema first,
        so a key added to da-toolkit since (saved without it, meaning its default) is no change."""
        before = self.read_recipe()
        if normalise is not None:
            before = normalise(before)
        return sorted(k for k in set(before) | set(recipe) if before.get(k) != recipe.get(k) and k != "output_dir")

    def write_metrics(self, metrics: dict) -> None:
        write_json_atomic(self.metrics_file, metrics)

    def read_metrics(self) -> dict:
        self.require("metrics.json")
        metrics = read_json(self.metrics_file, "metrics file")
        if "target_accuracy" not in metrics:
            raise UserError(f"{self.metrics_file}: not a da-toolkit metrics file (no target_accuracy)")
        return metrics

    def write_rescored(self, rescored: dict) -> None:
        write_json_atomic(self.rescored_file, rescored)

    def read_rescored(self) -> dict | None:
        """The scores `da-toolkit rescore` added to a finished run (rescore.py), or None."""
        return read_json(self.rescored_file, "rescored scores file") if self.rescored_file.exists() else None

    def save_classifier(self, state_dict: dict, num_classes: int, recipe: dict, class_names: tuple[str, ...] = (),
                        source: str | None = None) -> None:
        """classifier.pt: the weights, class count, recipe, and (read by a source-free run starting from it)
        the class names in the order of the head's outputs and the source dataset(s) it learnt from."""
        save_checkpoint({"state_dict": state_dict, "num_classes": num_classes, "recipe": recipe,
                         "class_names": list(class_names), "source": source}, self.classifier_file, "classifier")

    def load_classifier(self) -> tuple[dict, int]:
        """(weights, class count) of the trained classifier, read without running code."""
        self.require("classifier.pt")
        return read_classifier(self.classifier_file)


def read_classifier(path: Path) -> tuple[dict, int]:
    """(weights, class count) of a classifier.pt file (a run directory's, or one copied elsewhere), read
    without running code."""
    saved = load_checkpoint(path, "classifier")
    return saved["state_dict"], _class_count(saved)


def read_classifier_classes(path: Path) -> tuple[int, tuple[str, ...] | None, str | None]:
    """(class count, class names or None, source dataset name or None) of a classifier.pt file, read without
    running code; the names are None in a file written before they were stored, or when malformed."""
    saved = load_checkpoint(path, "classifier")
    num_classes, names, source = _class_count(saved), saved.get("class_names"), saved.get("source")
    names_ok = isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names)
    return num_classes, tuple(names) if names_ok else None, source if isinstance(source, str) else None


def _class_count(saved: dict) -> int:
    num_classes = saved.get("num_classes")
    if num_classes is None:  # written before the class count was stored: read it off the head
        state = saved["state_dict"]
        head = state.get("head.weight") if isinstance(state, dict) else None
        num_classes = head.shape[0] if head is not None else 10
    return num_classes


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


def being_written(run_dir: str | Path) -> bool:
    """Whether a process holds the write lock of `run_dir` now (a run in progress), tested without taking it."""
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # refused while a writer holds LOCK_EX; closing frees it
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


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
