"""Domains read from image files: `FileDomain`, the image folders and list files that fill it.

A `FileDomain` holds paths, labels and class names; an image is decoded only when it is read:
`read_image` opens the file, converts it to RGB, resizes it (bilinear, antialiased, by Pillow) to
image_size × image_size (a JPEG at least twice that size is decoded at 1/2, 1/4 or 1/8 scale first:
Pillow's draft mode) and converts it to the domain's channels (grey: the luminance 0.299 R + 0.587 G
+ 0.114 B). Every path that reads the domain — DataLoader workers streaming
training batches, `chunks` for evaluation and translation, `in_memory()` decoding it whole — goes
through `read_image`, so a domain gives the same uint8 images streamed or in memory.

Two ways to name files, both streamable:

    imagefolder   <folder>/<class>/*.png|jpg (or <folder>/{train,test}/<class>/...): class names are the
                  sub-folder names
    list file     lines `relative/path.jpg label` (Office-31, Office-Home, VisDA-2017, DomainNet as
                  distributed): class i is named after the folder its images lie in (e.g.
                  `amazon/images/back_pack/frame_0001.jpg 0` -> class 0 is `back_pack`), or "i"
                  when its images lie in several folders

Class names are what matches the classes of source and target (data/__init__.py `match_classes`).
"""
from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from da_toolkit.data.base import Domain, DomainDataset, conform, decoded_batches, digit_names
from da_toolkit.errors import UserError


class UnreadableImage(UserError):
    """An image file that cannot be decoded, or that is larger than Pillow's decompression-bomb limit."""


def last_line(error: BaseException) -> str:
    """The last non-empty line of an error message (where urllib and torchvision put the cause)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def read_rgb(path: Path | str, size: int | None = None) -> torch.Tensor:
    """An image file as uint8 3×H×W RGB, resized (bilinear, antialiased) to size × size if given.

    With a size, a JPEG is decoded at the smallest of 1/2, 1/4, 1/8 of its size that still covers
    size × size (Pillow's draft mode: libjpeg scales in the DCT domain, skipping most of the decoding;
    a 2016×1512 photo is read at 224 px about 8 times faster than decoded whole), then resized.
    Images of more than `PIL.Image.MAX_IMAGE_PIXELS` pixels (Pillow's decompression-bomb guard,
    about 89 million) are refused before they are decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if size is not None:
                    image.draft(None, (size, size))  # JPEG only; other formats ignore it
                image = image.convert("RGB")
                if size is not None:
                    image = image.resize((size, size), Image.Resampling.BILINEAR)
                return torch.from_numpy(np.array(image)).permute(2, 0, 1)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise UnreadableImage(f"{path}: refused: more than {Image.MAX_IMAGE_PIXELS} pixels (a decompression "
                              f"bomb?)") from None
    except (OSError, ValueError, SyntaxError) as error:  # UnidentifiedImageError is an OSError
        raise UnreadableImage(f"{path}: not a readable image ({last_line(error)})") from None


def read_image(path: Path | str, image_size: int, channels: int) -> torch.Tensor:
    """An image file as uint8 channels×image_size×image_size: `read_rgb`, then the channels of `conform`."""
    return conform(read_rgb(path, image_size)[None], image_size, channels)[0]


def find_images(folder: Path) -> list[str]:
    """Image files under `folder`, recursively and following symbolic links, each directory visited
    once (a symlink loop ends there), in sorted path order (component by component, as `Path`s sort).

    Paths are strings: a `Path` for each of 10⁵ files costs seconds at every scan."""
    seen: set[tuple[int, int]] = set()
    found = []
    for directory, subdirectories, files in os.walk(str(Path(folder)), followlinks=True):
        try:
            info = os.stat(directory)
        except OSError:
            subdirectories[:] = []
            continue
        if (info.st_dev, info.st_ino) in seen:
            subdirectories[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        found += [os.path.join(directory, name) for name in files
                  if os.path.splitext(name)[1].lower() in IMG_EXTENSIONS]
    return sorted(found, key=lambda path: path.split(os.sep))


class FileDomain(Domain):
    """A domain of image files, decoded on demand (`read_image`) at image_size × image_size × channels.

    `workers` DataLoader worker processes decode it for `chunks` and for a `BatchStream`
    (0: in the calling process); `skip_unreadable` skips unreadable files when the domain is read
    whole into memory (streamed, an unreadable file stops the run with its name).
    """

    def __init__(self, paths: Sequence[str], labels: torch.Tensor, name: str, class_names: list[str],
                 image_size: int, channels: int = 3, workers: int = 0, skip_unreadable: bool = False):
        if labels.shape != (len(paths),):
            raise ValueError(f"{name}: {len(paths)} files but labels of shape {tuple(labels.shape)}")
        self.paths = list(map(str, paths))
        self.labels = labels.to(torch.int64)
        self.name = name
        self.class_names = list(class_names)
        self.image_size, self.channels = image_size, channels
        self.workers, self.skip_unreadable = workers, skip_unreadable

    def __repr__(self) -> str:
        return (f"FileDomain({self.name!r}, {len(self)} files at {self.channels}×{self.image_size}×{self.image_size}, "
                f"{self.workers} workers)")

    def _like(self, paths, labels, name=None, class_names=None, **changes) -> "FileDomain":
        options = dict(image_size=self.image_size, channels=self.channels, workers=self.workers,
                       skip_unreadable=self.skip_unreadable)
        options.update(changes)
        return FileDomain(paths, labels, name or self.name, class_names or self.class_names, **options)

    def configured(self, image_size: int, channels: int, workers: int) -> "FileDomain":
        """The same files decoded at image_size × image_size × channels by `workers` workers."""
        return self._like(self.paths, self.labels, image_size=image_size, channels=channels, workers=workers)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def decoded_bytes(self) -> int:
        """The bytes the domain takes decoded in memory (uint8)."""
        return len(self) * self.channels * self.image_size ** 2

    def read(self, indices) -> torch.Tensor:
        indices = torch.as_tensor(indices, dtype=torch.int64).tolist()
        if not indices:
            return torch.empty((0, *self.image_shape), dtype=torch.uint8)
        return torch.stack([read_image(self.paths[i], self.image_size, self.channels) for i in indices])

    def chunks(self, batch_size: int) -> Iterator[torch.Tensor]:
        batches = [list(range(start, min(start + batch_size, len(self)))) for start in range(0, len(self), batch_size)]
        for images, _ in decoded_batches(self, batches, torch.device("cpu")):
            yield images

    def subset(self, indices: torch.Tensor, name: str | None = None) -> "FileDomain":
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return self._like([self.paths[i] for i in indices.tolist()], self.labels[indices], name)

    def with_labels(self, labels: torch.Tensor, class_names: list[str] | None = None) -> "FileDomain":
        return self._like(self.paths, labels, class_names=class_names)

    def in_memory(self) -> DomainDataset:
        """Every image decoded (by the workers) into one uint8 tensor, filled chunk by chunk (the domain is
        held once, not once as chunks and again concatenated); unreadable files are an error naming the
        file, or, with `skip_unreadable`, skipped with a warning that counts them."""
        keep = list(range(len(self)))
        if self.skip_unreadable:
            readable = [_readable(path) for path in self.paths]
            keep = [i for i, ok in enumerate(readable) if ok]
            skipped = [path for path, ok in zip(self.paths, readable) if not ok]
            if skipped:
                warnings.warn(f"{self.name}: skipped {len(skipped)} unreadable image(s) of {len(self)} "
                              f"(first: {skipped[0]})")
            if not keep:
                raise UserError(f"{self.name}: none of the {len(self)} images could be read")
        domain = self if len(keep) == len(self) else self.subset(torch.tensor(keep))
        images = torch.empty((len(domain), *domain.image_shape), dtype=torch.uint8)
        filled = 0
        for chunk in domain.chunks(256):
            images[filled:filled + len(chunk)] = chunk
            filled += len(chunk)
        return DomainDataset(images, domain.labels, self.name, class_names=self.class_names)

    @functools.cached_property
    def _fingerprint(self) -> str:
        digest = hashlib.sha1(f"{self.image_size} {self.channels}".encode())
        for path, label in zip(self.paths, self.labels.tolist()):
            info = os.stat(path)
            digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\0{label}\n".encode())
        return digest.hexdigest()[:16]

    def fingerprint(self) -> str:
        """A short hash of the files (path, size, modification time), labels, image size and channels."""
        return self._fingerprint


def _readable(path: str) -> bool:
    try:
        read_rgb(path, 1)
        return True
    except UnreadableImage:
        return False


# ---------------------------------------------------------------------------------- image folders

TEST_EVERY = 5  # the deterministic split of a folder without train/ and test/: the 5th, 10th, ... image is test


def image_folder(folder: Path, image_size: int, split: str, split_by_order: str | None = None) -> FileDomain:
    """The images in class sub-folders of `folder` (sorted class names give labels 0, 1, ...), found as
    torchvision's ImageFolder finds them; with `split_by_order`, every fifth image of each class (sorted
    by path) is the test split and the others the training split."""
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = find_images(folder / name)
        if split_by_order is not None:
            found = [p for i, p in enumerate(found) if (i % TEST_EVERY == TEST_EVERY - 1) == (split_by_order == "test")]
        paths += found
        labels += [label] * len(found)
    if not paths and split_by_order == "test":
        raise UserError(f"imagefolder: {folder} has no test split (every fifth image of each class would be one, but "
                        f"no class has 5 images); add train/ and test/ sub-folders")
    if not paths:
        raise UserError(f"imagefolder: {folder} holds no images in class sub-folders (<class>/*"
                        f"{'|*'.join(IMG_EXTENSIONS)})")
    return FileDomain(paths, torch.tensor(labels, dtype=torch.int64), f"imagefolder:{folder.name}/{split}", classes,
                      image_size)


# ------------------------------------------------------------------------------------- list files


def image_list(list_file: Path, image_root: Path, image_size: int, name: str) -> FileDomain:
    """The images a list file names, one `relative/path label` a line (paths relative to `image_root`;
    blank lines and lines starting with # are skipped). Class i is named after the one folder its images
    lie in, or "i" when they lie in several; labels must be 0, 1, ... (a label no image has is named "i")."""
    paths, labels = [], []
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        relative, _, label = line.rpartition(" ")
        if not relative or not label.lstrip("-").isdigit() or int(label) < 0:
            raise UserError(f"{list_file}:{number}: expected `relative/path.jpg label` with a label 0, 1, ..., got "
                            f"{line[:120]!r}")
        paths.append(image_root / relative.strip())
        labels.append(int(label))
    if not paths:
        raise UserError(f"{list_file}: lists no images (lines `relative/path.jpg label`)")
    missing = [path for path in paths[:: max(1, len(paths) // 64)] if not path.is_file()]  # a cheap spot check
    if missing:
        raise UserError(f"{list_file}: lists {missing[0]}, which does not exist (paths are relative to {image_root}; "
                        f"{len(missing)} of {len(paths[:: max(1, len(paths) // 64)])} checked files are missing)")
    folders: dict[int, set[str]] = {}
    for path, label in zip(paths, labels):
        folders.setdefault(label, set()).add(path.parent.name)
    names = [next(iter(folders[i])) if len(folders.get(i, ())) == 1 else str(i) for i in range(max(labels) + 1)]
    if len(set(names)) < len(names):  # two labels in same-named folders: the numbers are the names
        names = digit_names(len(names))
    return FileDomain(paths, torch.tensor(labels, dtype=torch.int64), name, names, image_size)
