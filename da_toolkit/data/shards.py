"""Images on disk in shards: a translated source set that need not fit in memory, written as it is
made, resumable after the writer was killed, and read back lazily as a domain.

A shard set is a folder::

    index.json        {"format": 1, "images": N, "image_shape": [C, H, W], "shard_images": S,
                       "shards": {"0": {"bytes": ..., "sha256": ...}, ...}}: the finished shards
    shard_00000.u8    images [0, S) as raw uint8 bytes (n × C × H × W, C order)
    shard_00001.u8    images [S, 2S), ...

Shards are raw bytes read with numpy (memory-mapped): nothing in them is unpickled, so nothing in
them can run code. A shard is written atomically (temporary file, fsync, rename) and only then
recorded in the index, with its size and sha256 (the index is rewritten atomically too). A writer
killed at any point (kill -9 included) therefore leaves finished shards that are whole and listed,
and at most a temporary file. Opening the set again verifies every listed shard (size, then hash),
keeps the good ones, and reports the others (and the unlisted ones) as `missing`, to be written again.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from da_toolkit.data.base import Domain, DomainDataset
from da_toolkit.errors import UserError
from da_toolkit.training.checkpoint import read_json, write_bytes_atomic, write_json_atomic

FORMAT = 1
INDEX = "index.json"
SHARD_BYTES = 256 * 2 ** 20  # a shard holds about this many bytes of images ...
MAX_SHARD_IMAGES = 4096  # ... and at most this many images


def shard_images(image_shape: Sequence[int], multiple_of: int = 1) -> int:
    """Images per shard for images of `image_shape`: about SHARD_BYTES, at most MAX_SHARD_IMAGES,
    rounded down to a multiple of `multiple_of` (a translation batch, so that shards cut no batch)."""
    per_image = int(np.prod(image_shape))
    count = max(1, min(MAX_SHARD_IMAGES, SHARD_BYTES // per_image))
    return max(multiple_of, count // multiple_of * multiple_of)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(16 * 2 ** 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ShardSet:
    """The shard set in `folder` for `images` images of `image_shape`, `per_shard` to a shard.

    Opening it reads and checks the index: an index for other dimensions, or one that cannot be
    read, is discarded (`warn` is told why) and the set starts empty; a listed shard whose file is
    missing or has another size or hash is dropped (`warn` is told) and is `missing` again.
    `writable=False` opens it for reading only (it then changes nothing on disk).
    """

    def __init__(self, folder: Path, images: int, image_shape: Sequence[int], per_shard: int,
                 warn: Callable[[str], None], writable: bool = True):
        self.folder = Path(folder)
        self.images, self.image_shape, self.per_shard = images, tuple(image_shape), per_shard
        self.writable = writable
        self.count = -(-images // per_shard)
        self.finished: dict[int, dict] = {}
        index = self.folder / INDEX
        if index.exists():
            self.finished = self._verified(self._read_index(index, warn), warn)
        if writable:
            for stale in self.folder.glob(".shard_*.tmp"):  # left by a writer that was killed mid-write
                stale.unlink(missing_ok=True)

    def _read_index(self, index: Path, warn) -> dict[int, dict]:
        try:
            data = read_json(index, "shard index")
        except UserError as error:
            warn(f"discarding the shard index {index}: {error}")
            return {}
        expected = {"format": FORMAT, "images": self.images, "image_shape": list(self.image_shape),
                    "shard_images": self.per_shard}
        found = {key: data.get(key) for key in expected}
        if found != expected or not isinstance(data.get("shards"), dict):
            warn(f"discarding the shards in {self.folder}: their index says {found}, but this set is {expected}")
            return {}
        return {int(number): entry for number, entry in data["shards"].items()
                if str(number).isdigit() and int(number) < self.count and isinstance(entry, dict)}

    def _verified(self, listed: dict[int, dict], warn) -> dict[int, dict]:
        kept = {}
        for number, entry in sorted(listed.items()):
            path = self.path(number)
            size = path.stat().st_size if path.is_file() else None
            if size != self.shard_bytes(number) or entry.get("bytes") != size:
                problem = "is missing" if size is None else f"has {size} bytes, not {self.shard_bytes(number)}"
            elif sha256_of(path) != entry.get("sha256"):
                problem = "does not match its sha256 (corrupted)"
            else:
                kept[number] = entry
                continue
            warn(f"shard {number} of {self.folder} {problem}; it will be written again")
        return kept

    # -- layout -----------------------------------------------------------------------------------
    def path(self, number: int) -> Path:
        return self.folder / f"shard_{number:05d}.u8"

    def span(self, number: int) -> tuple[int, int]:
        """The indices [start, stop) of the images shard `number` holds."""
        return number * self.per_shard, min((number + 1) * self.per_shard, self.images)

    def shard_bytes(self, number: int) -> int:
        start, stop = self.span(number)
        return (stop - start) * int(np.prod(self.image_shape))

    def missing(self) -> list[int]:
        """The shards not (verifiably) written yet, in order."""
        return [number for number in range(self.count) if number not in self.finished]

    # -- writing ----------------------------------------------------------------------------------
    def write(self, number: int, images: torch.Tensor) -> None:
        """Write shard `number` (uint8 images of its span, in order) and record it in the index."""
        start, stop = self.span(number)
        if not self.writable:
            raise RuntimeError(f"{self.folder}: opened for reading only")
        if images.dtype != torch.uint8 or tuple(images.shape) != (stop - start, *self.image_shape):
            raise ValueError(f"shard {number}: expected uint8 {(stop - start, *self.image_shape)}, got "
                             f"{images.dtype} {tuple(images.shape)}")
        data = images.contiguous().numpy()
        write_bytes_atomic(self.path(number), data)
        self.finished[number] = {"bytes": data.nbytes, "sha256": hashlib.sha256(data).hexdigest()}
        write_json_atomic(self.folder / INDEX, {
            "format": FORMAT, "images": self.images, "image_shape": list(self.image_shape),
            "shard_images": self.per_shard, "shards": {str(n): e for n, e in sorted(self.finished.items())}})

    # -- reading ----------------------------------------------------------------------------------
    def domain(self, labels: torch.Tensor, name: str, class_names: list[str], workers: int = 0) -> "ShardDomain":
        """The finished set as a domain with these labels (one per image), read lazily from the shards."""
        if self.missing():
            raise UserError(f"{self.folder}: shards {self.missing()} are not written yet")
        if len(labels) != self.images:
            raise ValueError(f"{name}: {self.images} images but {len(labels)} labels")
        files = [str(self.path(number)) for number in range(self.count)]
        return ShardDomain(files, self.per_shard, self.image_shape, torch.arange(self.images), labels, name,
                           class_names, workers)

    def __repr__(self) -> str:
        return (f"ShardSet({str(self.folder)!r}, {self.images} images {self.image_shape}, "
                f"{len(self.finished)}/{self.count} shards)")


class ShardDomain(Domain):
    """A domain whose images lie in the shard files of a `ShardSet`, read on demand (memory-mapped).

    `positions[i]` is where image i lies in the shard set (a subset keeps the files and picks
    positions). Like a `FileDomain`, it is streamed by `BatchStream` (`workers` DataLoader workers)
    and read whole only by `in_memory()`.
    """

    def __init__(self, files: list[str], per_shard: int, image_shape: Sequence[int], positions: torch.Tensor,
                 labels: torch.Tensor, name: str, class_names: list[str], workers: int = 0):
        if labels.shape != positions.shape:
            raise ValueError(f"{name}: {len(positions)} images but labels of shape {tuple(labels.shape)}")
        self.files, self.per_shard, self._shape = list(files), per_shard, tuple(image_shape)
        self.positions = positions.to(torch.int64)
        self.labels = labels.to(torch.int64)
        self.name, self.class_names, self.workers = name, list(class_names), workers
        self._maps: dict[int, np.memmap] = {}

    def __repr__(self) -> str:
        return f"ShardDomain({self.name!r}, {len(self)} images {self._shape} in {len(self.files)} shards)"

    def __getstate__(self) -> dict:  # DataLoader workers open their own memory maps
        return {**self.__dict__, "_maps": {}}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._shape

    def _map(self, number: int) -> np.memmap:
        if number not in self._maps:
            self._maps[number] = np.memmap(self.files[number], dtype=np.uint8, mode="r").reshape(-1, *self._shape)
        return self._maps[number]

    def read(self, indices) -> torch.Tensor:
        positions = self.positions[torch.as_tensor(indices, dtype=torch.int64)]
        out = torch.empty((len(positions), *self._shape), dtype=torch.uint8)
        shards = positions // self.per_shard
        for number in shards.unique().tolist():
            where = torch.nonzero(shards == number).flatten()
            offsets = (positions[where] - number * self.per_shard).numpy()
            out[where] = torch.from_numpy(np.ascontiguousarray(self._map(number)[offsets]))
        return out

    def _like(self, positions, labels, name=None, class_names=None) -> "ShardDomain":
        return ShardDomain(self.files, self.per_shard, self._shape, positions, labels, name or self.name,
                           class_names or self.class_names, self.workers)

    def subset(self, indices: torch.Tensor, name: str | None = None) -> "ShardDomain":
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return self._like(self.positions[indices], self.labels[indices], name)

    def with_labels(self, labels: torch.Tensor, class_names: list[str] | None = None) -> "ShardDomain":
        return self._like(self.positions, labels, class_names=class_names)

    def in_memory(self) -> DomainDataset:
        images = list(self.chunks(4096)) or [torch.empty((0, *self._shape), dtype=torch.uint8)]
        return DomainDataset(torch.cat(images), self.labels, self.name, class_names=self.class_names)

    def fingerprint(self) -> str:
        """A short hash of the shards' names and sizes, the positions and the labels (the shards of a set
        are verified by hash when it is opened, and a set's folder is named by what it holds)."""
        digest = hashlib.sha1(f"{self._shape} {self.per_shard}".encode())
        for path in self.files:
            digest.update(f"{path}\0{Path(path).stat().st_size}\n".encode())
        digest.update(self.positions.numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()[:16]
