"""Domains: the dataset registry and `build_domains`, which turns a recipe's data section into tensors.

Every registered loader is ``load(split, root, seed, image_size, folder=None) -> DomainDataset``:
`root` is the data root, `folder` the recipe's `root` key (imagefolder only); it returns uint8
images at its native resolution and channel count (`image_size` is a hint for loaders whose
images vary in size), and `build_domain` conforms them to the recipe's image size and channels.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from da_toolkit.data.base import UNLABELED, BatchStream, Domains, DomainDataset, conform, per_class_indices
from da_toolkit.registry import Registry

DATASETS = Registry("dataset")

# the loader modules register themselves in DATASETS
from da_toolkit.data import real, synthetic  # noqa: E402,F401

__all__ = ["DATASETS", "UNLABELED", "BatchStream", "Domains", "DomainDataset", "build_domain", "build_domains",
           "data_root"]


def data_root() -> Path:
    """$DA_TOOLKIT_DATA if set, else the `data/` folder at the top of the checkout (or the working directory)."""
    env = os.environ.get("DA_TOOLKIT_DATA")
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[2] / "data"
    return checkout if checkout.is_dir() else Path.cwd() / "data"


def build_domain(spec, image_size: int, channels: int, seed: int, root: Path | None = None) -> DomainDataset:
    """Load one `DomainSpec` (name, split, limit, root) and conform it to image_size × image_size × channels."""
    loader = DATASETS.get(spec.name)
    options = {"skip_unreadable": True} if spec.skip_unreadable else {}
    dataset = loader(split=spec.split, root=root or data_root(), seed=seed, image_size=image_size, folder=spec.root,
                     **options)
    if spec.limit is not None:
        dataset = dataset.sample(spec.limit, torch.Generator().manual_seed(seed))
    images = conform(dataset.images, image_size, channels)
    return DomainDataset(images, dataset.labels, f"{spec.name}/{spec.split}", dataset.num_classes)


def build_domains(data, seed: int, root: Path | None = None) -> Domains:
    """All domains of a recipe's `data` section.

    The target training set keeps the labels of `target_labels_per_class` images per class
    (chosen with the seed) and hides all others (label -1).
    """
    def load(spec):
        return None if spec is None else build_domain(spec, data.image_size, data.channels, seed, root)

    target = load(data.target)
    labels = torch.full_like(target.labels, UNLABELED)
    if data.target_labels_per_class:
        keep = per_class_indices(target.labels, data.target_labels_per_class, seed, target.num_classes)
        labels[keep] = target.labels[keep]
    target = DomainDataset(target.images, labels, target.name, target.num_classes)
    return Domains(source=load(data.source), target=target, target_test=load(data.target_test),
                   source_test=load(data.source_test))
