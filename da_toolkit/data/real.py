"""Loaders of real image datasets read from files under the data root (see data/README.md).

The data root is $DA_TOOLKIT_DATA, else the checkout's `data/` folder. Each loader reads the
published files in the layout torchvision uses; when they are missing it tries the published
download once (unless DA_TOOLKIT_DOWNLOAD=0), and offline it stops with a UserError that names the
files, the folder it looked in and how to place them. Loaded datasets are cached in-process (loading
MNIST twice in a run is free); the returned tensors are shared and must be treated as read-only.

    mnist        <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte       (torchvision)
    usps         <root>/usps.bz2, <root>/usps.t.bz2 (LIBSVM; or under <root>/USPS/)   (torchvision)
    svhn         <root>/SVHN/{train,test}_32x32.mat (or <root>/{train,test}_32x32.mat)
    mnistm       <root>/mnist_m/mnist_m_{train,test}/*.png + mnist_m_{train,test}_labels.txt
"""
from __future__ import annotations

import functools
import os
import tarfile
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.io
import torch
import torchvision
from sklearn.datasets import load_svmlight_file
from torchvision.datasets.utils import download_and_extract_archive, download_url

from da_toolkit.data import DATASETS
from da_toolkit.data.base import DomainDataset
from da_toolkit.data.files import last_line, read_rgb
from da_toolkit.errors import UserError

# Errors a failed download raises: no network (URLError is an OSError), a read-only folder,
# a checksum mismatch or an exhausted mirror list (RuntimeError), a broken archive.
DOWNLOAD_ERRORS = (OSError, RuntimeError, tarfile.TarError)


def require_files(dataset: str, folder: Path, names: list[str], download: Callable[[], None],
                  how_to_place: str) -> None:
    """Make sure `folder` holds `names` (files; a name ending in / is a folder), calling `download` when
    some are missing, unless DA_TOOLKIT_DOWNLOAD=0 turns downloads off.

    Raises one UserError naming the missing files, the folder and `how_to_place` when downloads are
    off, or the download fails (offline, read-only folder, bad checksum) or does not produce the files.
    """
    def missing() -> list[str]:
        return [name for name in names
                if not ((folder / name).is_dir() if name.endswith("/") else (folder / name).is_file())]

    if not missing():
        return
    if os.environ.get("DA_TOOLKIT_DOWNLOAD", "1") == "0":
        reason = "downloads are off: DA_TOOLKIT_DOWNLOAD=0"
    else:
        try:
            download()
        except DOWNLOAD_ERRORS as error:
            reason = f"download failed: {last_line(error)}"
        else:
            if not missing():
                return
            reason = "the download did not produce them"
    raise UserError(
        f"{dataset}: missing {', '.join(missing())} in {folder} ({reason}). {how_to_place} "
        f"Or set DA_TOOLKIT_DATA to a data root that holds them (see data/README.md)."
    )


# --------------------------------------------------------------------------------------- MNIST


@DATASETS.register("mnist", "MNIST handwritten digits, 28×28 grey, 60,000 train / 10,000 test")
def mnist(split: str, root: Path, seed: int = 0, image_size: int = 28, folder: str | None = None) -> DomainDataset:
    """MNIST (LeCun et al.) read by torchvision from <root>/MNIST/raw/*-idx?-ubyte (uncompressed)."""
    return _mnist(split, Path(root))


@functools.lru_cache(maxsize=4)
def _mnist(split: str, root: Path) -> DomainDataset:
    train = split == "train"
    prefix = "train" if train else "t10k"
    require_files(
        "mnist", root / "MNIST" / "raw", [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"],
        download=lambda: torchvision.datasets.MNIST(root, train=train, download=True),
        how_to_place="Download the .gz files from https://ossci-datasets.s3.amazonaws.com/mnist/ and gunzip them "
                     "into that folder.",
    )
    data = torchvision.datasets.MNIST(root, train=train, download=False)
    return DomainDataset(data.data.unsqueeze(1), data.targets, f"mnist/{split}")


# ---------------------------------------------------------------------------------------- USPS


@DATASETS.register("usps", "USPS handwritten digits, 16×16 grey, 7,291 train / 2,007 test")
def usps(split: str, root: Path, seed: int = 0, image_size: int = 16, folder: str | None = None) -> DomainDataset:
    """USPS (Hull 1994) in LIBSVM format: <root>/usps.bz2 and <root>/usps.t.bz2 (or under <root>/USPS/)."""
    return _usps(split, Path(root))


@functools.lru_cache(maxsize=4)
def _usps(split: str, root: Path) -> DomainDataset:
    url, filename, md5 = torchvision.datasets.USPS.split_list[split]
    folder = next((f for f in (root, root / "USPS") if (f / filename).is_file()), root)
    require_files("usps", folder, [filename], download=lambda: download_url(url, str(folder), filename, md5),
                  how_to_place=f"Download {url} into that folder.")
    return read_libsvm_digits(folder / filename, f"usps/{split}")


def read_libsvm_digits(path: Path, name: str, side: int = 16) -> DomainDataset:
    """Grey side×side images from a LIBSVM file (plain or .bz2): lines `label i:v ...`, label 1..10
    meaning digit 0..9, pixel values v in [-1, 1] -> round((v + 1) · 127.5); omitted pixels are 0."""
    features, targets = load_svmlight_file(str(path), n_features=side * side, dtype=np.float32)
    pixels = np.rint((features.toarray() + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    images = torch.from_numpy(pixels).view(-1, 1, side, side)
    labels = torch.from_numpy(targets.astype(np.int64) - 1)
    return DomainDataset(images, labels, name)


# ---------------------------------------------------------------------------------------- SVHN


@DATASETS.register("svhn", "SVHN street-view house numbers, 32×32 colour, 73,257 train / 26,032 test")
def svhn(split: str, root: Path, seed: int = 0, image_size: int = 32, folder: str | None = None) -> DomainDataset:
    """SVHN cropped digits (Netzer et al. 2011): <root>/SVHN/{train,test}_32x32.mat (or directly in <root>)."""
    return _svhn(split, Path(root))


@functools.lru_cache(maxsize=2)
def _svhn(split: str, root: Path) -> DomainDataset:
    url, filename, md5 = torchvision.datasets.SVHN.split_list[split]
    folder = next((f for f in (root / "SVHN", root) if (f / filename).is_file()), root / "SVHN")
    require_files("svhn", folder, [filename], download=lambda: download_url(url, str(folder), filename, md5),
                  how_to_place=f"Download {url} into that folder.")
    return read_svhn_mat(folder / filename, f"svhn/{split}")


def read_svhn_mat(path: Path, name: str) -> DomainDataset:
    """An SVHN .mat file: X of shape H×W×3×N (uint8), y of shape N×1 where label 10 means digit 0."""
    mat = scipy.io.loadmat(str(path))
    images = torch.from_numpy(np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)))).to(torch.uint8)
    labels = torch.from_numpy(mat["y"].astype(np.int64).reshape(-1) % 10)
    return DomainDataset(images, labels, name)


# -------------------------------------------------------------------------------------- MNIST-M

MNISTM_URL = "https://cornell.box.com/shared/static/jado7quprg6hzzdubvwzh9umr75damwi"
MNISTM_MD5 = "859df31c91afe82e80e5012ba928f279"


@DATASETS.register("mnistm", "MNIST-M (Ganin et al.): MNIST over photo patches, 28×28 colour, published files")
def mnistm(split: str, root: Path, seed: int = 0, image_size: int = 28, folder: str | None = None) -> DomainDataset:
    """The published MNIST-M (mnist_m.tar.gz extracted into <root>): <root>/mnist_m/mnist_m_{split}/*.png
    listed with their labels in <root>/mnist_m/mnist_m_{split}_labels.txt (lines `00000000.png 5`)."""
    return _mnistm(split, Path(root))


@functools.lru_cache(maxsize=2)
def _mnistm(split: str, root: Path) -> DomainDataset:
    folder = root / "mnist_m"
    labels_file = f"mnist_m_{split}_labels.txt"
    require_files(
        "mnistm", folder, [labels_file],
        download=lambda: download_and_extract_archive(MNISTM_URL, str(root), filename="mnist_m.tar.gz", md5=MNISTM_MD5),
        how_to_place=f"Extract the published mnist_m.tar.gz ({MNISTM_URL}) into {root}, giving "
                     f"mnist_m/mnist_m_{split}/*.png and mnist_m/{labels_file}.",
    )
    entries = [line.split() for line in (folder / labels_file).read_text().splitlines() if line.strip()]
    images = []
    for filename, _ in entries:
        path = folder / f"mnist_m_{split}" / filename
        if not path.is_file():
            raise UserError(f"mnistm: {labels_file} lists {filename} but {path} does not exist")
        images.append(read_rgb(path))
    labels = torch.tensor([int(label) for _, label in entries], dtype=torch.int64)
    return DomainDataset(torch.stack(images), labels, f"mnistm/{split}")
