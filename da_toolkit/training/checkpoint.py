"""The toolkit's files on disk: written atomically, read without ever running code.

(YAML and JSON are read here too, with one-line errors: `read_yaml`, `read_json`.)

Writing: a file is serialised in memory, written to a temporary file beside its destination,
flushed to disk and renamed over it, so a reader (or a crash, or a full disk) never leaves a
half-written checkpoint, metrics or recipe file, and the previous version stays intact until the
new one is complete. Files get the permissions the user's umask gives (as `open` would).

Reading: every `.pt` file goes through `load_checkpoint`, which uses torch's weights-only
unpickler: it rebuilds tensors, numbers, strings, lists and dicts and refuses anything else, so a
checkpoint, classifier or cache from someone else cannot run code when it is opened. Each file
starts with a header ``{"format": {"kind": KIND, "version": FORMAT_VERSION}}``; files written
before headers existed (format 0) load when they hold the keys their kind needs. Every problem
(unsafe, empty, truncated, another program's file, a newer format, a state that does not fit the
model) is one `UnreadableFile` error naming the file: the CLI prints it as one line, exit 2.

torch is imported where a `.pt` file is written or read, so that a process which only locks a run
directory or reads its JSON and YAML (a lock holder, `show`) starts without it.
"""
from __future__ import annotations

import io
import json
import math
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import yaml

from da_toolkit.errors import UserError

FORMAT_VERSION = 1

# what each kind of file must hold (besides its header), and how to name it in a message
KINDS = {
    "stage": (("iteration", "rng", "state"), "stage checkpoint"),
    "classifier": (("state_dict",), "classifier"),
    "dataset": (("images", "labels"), "dataset cache"),
}


class UnreadableFile(UserError):
    """A file the toolkit reads is unsafe, corrupt, of another kind or format, or does not fit."""


class WriteFailed(UserError):
    """A file could not be written (disk full, read-only or missing folder); the old version is intact."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: Path, data: bytes | memoryview) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise WriteFailed(f"cannot write {path}: {error.strerror or error}; nothing was replaced (the previous "
                          f"version of the file, if any, is intact)") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(obj: dict, path: Path, kind: str) -> None:
    """torch.save `obj` (tensors and plain data only) with a format header, atomically, to `path`."""
    if kind not in KINDS:
        raise ValueError(f"unknown file kind {kind!r}")
    import torch

    buffer = io.BytesIO()
    torch.save({"format": {"kind": kind, "version": FORMAT_VERSION}, **obj}, buffer)
    _atomic(path, buffer.getbuffer())


def write_bytes_atomic(path: Path, data: bytes | memoryview) -> None:
    """`data` (bytes, or any contiguous buffer such as a numpy array) written atomically to `path`."""
    _atomic(path, data)


def write_text_atomic(path: Path, text: str) -> None:
    _atomic(path, text.encode())


def write_json_atomic(path: Path, data: Any) -> None:
    """`data` as strict JSON (RFC 8259, readable by any tool), written atomically: a float that is not finite
    (a validator with nothing to score, e.g. fewer target images than classes, gives NaN) is written as null."""
    write_text_atomic(path, json.dumps(_finite_or_null(data), indent=2, allow_nan=False) + "\n")


def _finite_or_null(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite_or_null(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite_or_null(value) for value in data]
    return data


def _read_text(path: Path, what: str) -> str:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not a text (UTF-8) file (byte {error.start} is {error.object[error.start]:#04x}); "
                        f"a {what} is a text file") from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror or error})") from None


def read_yaml(path: Path, what: str = "recipe") -> dict:
    """A YAML mapping from `path` (safe loading: plain data only); every problem is one UserError."""
    text = _read_text(path, what)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or " ".join(str(error).split())  # a ReaderError's is 2 lines
        raise UserError(f"{path}:{where} is not valid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a {what} must be a mapping of keys, got {type(data).__name__}")
    return data


def read_json(path: Path, what: str) -> dict:
    """A JSON object from `path`; every problem is one UserError."""
    try:
        data = json.loads(_read_text(path, what))
    except ValueError as error:
        raise UserError(f"{path}: not a readable {what} ({one_line(error)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a {what} (a JSON {type(data).__name__}, not an object)")
    return data


def one_line(error: BaseException) -> str:
    """A multi-line error message (e.g. load_state_dict's) folded into one short line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    text = "; ".join(lines[1:3] if len(lines) > 1 else lines)
    return text if len(text) <= 240 else text[:237] + "..."


def load_checkpoint(path: Path, kind: str | None = None) -> dict:
    """Read a `kind` file written by `save_checkpoint` (None: any kind), on the CPU, without running any
    code in it."""
    import torch

    path = Path(path)
    required, what = KINDS[kind] if kind is not None else ((), "da-toolkit file")
    if not path.is_file():
        raise UnreadableFile(f"{path}: no such {what} file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            raise UnreadableFile(f"{path}: refused to load: it holds Python objects other than tensors and plain "
                                 f"data, which could run code (nothing in it was run); da-toolkit never writes such "
                                 f"files, so do not trust its source") from None
        raise UnreadableFile(f"{path}: not a readable {what} (corrupt or not a torch file; refused by the safe "
                             f"loader, nothing in it was run)") from None
    except Exception as error:  # the weights-only unpickler ran nothing; any failure means a broken file
        cause = one_line(error).split(". ")[0].rstrip(".")
        reason = "empty file" if path.stat().st_size == 0 else f"truncated, corrupt or not a torch file: {cause}"
        raise UnreadableFile(f"{path}: not a readable {what} ({reason})") from None
    if not isinstance(obj, dict):
        raise UnreadableFile(f"{path}: not a da-toolkit {what} (it holds a {type(obj).__name__}, written by "
                             f"another program?)")
    header = obj.get("format")
    if header is not None:
        version = header.get("version") if isinstance(header, dict) else None
        if not isinstance(version, int):
            raise UnreadableFile(f"{path}: not a da-toolkit {what} (its format header is {header!r})")
        if version > FORMAT_VERSION:
            raise UnreadableFile(f"{path}: written by a newer da-toolkit (file format {version}; this version reads "
                                 f"formats up to {FORMAT_VERSION}): upgrade da-toolkit to use it")
        if kind is not None and header.get("kind") != kind:
            found = KINDS.get(header.get("kind"), (None, repr(header.get("kind"))))[1]
            raise UnreadableFile(f"{path}: this is a {found} file, not a {what}")
    missing = [key for key in required if key not in obj]
    if missing:
        raise UnreadableFile(f"{path}: not a da-toolkit {what} (it has no {', '.join(missing)}; written by another "
                             f"program?)")
    return obj


def load_state(target, state: Any, path: Path, part: str) -> None:
    """`target.load_state_dict(state)`, a mismatch (architecture, class count, method) reported as one line."""
    try:
        target.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as error:
        raise UnreadableFile(f"{path}: its {part} does not fit this model ({one_line(error)}); was it written "
                             f"for another architecture, class count or method?") from None
