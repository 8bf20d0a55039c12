"""Atomic writes: a reader never sees a half-written checkpoint, metrics or recipe file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file beside `path`, then rename it over `path`."""
    _atomic(path, lambda handle: torch.save(obj, handle))


def write_text_atomic(path: Path, text: str) -> None:
    _atomic(path, lambda handle: handle.write(text.encode()))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """Load a checkpoint this toolkit wrote (it holds generator states and plain Python objects)."""
    return torch.load(path, map_location=device, weights_only=False)
