"""Domains: the dataset registry and `build_domains`, which turns a recipe's data section into domains.

Every registered loader is ``load(split, root, seed, image_size, folder=None, list_file=None) -> Domain``:
`root` is the data root, `folder` the recipe's `root` key and `list_file` its `list` key (file-backed
datasets only). In-memory loaders return a `DomainDataset` of uint8 images at their native
resolution and channel count, which `build_domain` conforms to the recipe's image size and
channels; file-backed loaders return a `FileDomain` (data/files.py), which decodes each image at
that size when it is read, and which `build_domain` reads into memory or leaves streamed
(`data.<domain>.storage`).

Classes are matched by name (`match_classes`): the target, target test and source test domains are
relabeled into the source's class order; a class name one has and another lacks is an error.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from da_toolkit.data.base import (UNLABELED, BatchStream, Domain, Domains, DomainDataset, conform,
                                  concatenate, per_class_indices)
from da_toolkit.data.files import FileDomain
from da_toolkit.errors import UserError
from da_toolkit.registry import Registry

DATASETS = Registry("dataset")

# the loader modules register themselves in DATASETS
from da_toolkit.data import folders, photo, real, synthetic  # noqa: E402,F401

# the datasets whose loaders return a FileDomain (image files: streamable, `skip_unreadable`)
FILE_DATASETS = ("imagefolder", "imagelist", *photo.PHOTO_DATASETS)

__all__ = ["DATASETS", "FILE_DATASETS", "UNLABELED", "BatchStream", "Domain", "Domains", "DomainDataset", "FileDomain",
           "build_domain", "build_domains", "data_root", "match_classes"]

GB = 1e9


def data_root() -> Path:
    """$DA_TOOLKIT_DATA if set, else the `data/` folder at the top of the checkout (or the working directory)."""
    env = os.environ.get("DA_TOOLKIT_DATA")
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[2] / "data"
    return checkout if checkout.is_dir() else Path.cwd() / "data"


def build_domain(spec, image_size: int, channels: int, seed: int, root: Path | None = None, workers: int = 0,
                 memory_budget_gb: float = 4.0, key: str = "data", report=None,
                 memory_left_gb: float | None = None) -> Domain:
    """Load one `DomainSpec` (name, split, limit, root, list, storage) at image_size × image_size × channels.

    A file-backed domain is read into memory (`storage: memory`), streamed from its files by
    `workers` DataLoader workers (`stream`), or, with `auto`, read into memory when its decoded size
    fits what is left of `memory_budget_gb` (`memory_left_gb`: the budget is the run's, shared by its
    domains; default all of it) and streamed otherwise; `report` (a callable taking one line) is told
    which, and why."""
    loader = DATASETS.get(spec.name)
    extra = {"list_file": spec.list} if spec.list is not None else {}
    dataset = loader(split=spec.split, root=root or data_root(), seed=seed, image_size=image_size, folder=spec.root,
                     **extra)
    if spec.limit is not None:
        dataset = dataset.sample(spec.limit, torch.Generator().manual_seed(seed))
    name = f"{spec.name}/{spec.split}"
    if isinstance(dataset, FileDomain):
        files = dataset.configured(image_size, channels, workers)
        files.name, files.skip_unreadable = name, spec.skip_unreadable
        size = files.decoded_bytes / GB
        storage = spec.storage
        if storage == "auto":
            left = memory_budget_gb if memory_left_gb is None else memory_left_gb
            storage = "memory" if size <= left else "stream"
            budget = (f"the memory budget of {memory_budget_gb:g} GB" if left == memory_budget_gb else
                      f"the {max(left, 0):.2f} GB left of the memory budget of {memory_budget_gb:g} GB")
            why = f"{size:.2f} GB decoded {'fits' if storage == 'memory' else 'exceeds'} {budget} (data.memory_budget_gb)"
        else:
            why = f"{key}.storage: {storage}"
        if storage == "stream" and spec.skip_unreadable:
            raise UserError(f"{key}.skip_unreadable: a streamed domain cannot skip an unreadable image in the middle of "
                            f"training ({name}, {why}); remove the unreadable files, or read the domain into memory "
                            f"({key}.storage=memory, or a larger data.memory_budget_gb)")
        if report is not None:
            how = "read into memory" if storage == "memory" else f"streamed from its files by {workers} worker(s)"
            report(f"{key}: {name}, {len(files)} images {channels}×{image_size}×{image_size}, {how} ({why})")
        return files.in_memory() if storage == "memory" else files
    if spec.storage == "stream":
        raise UserError(f"{key}.storage: stream needs a file-backed domain (imagefolder, imagelist or a photo "
                        f"benchmark); '{spec.name}' is read whole from its files: use auto or memory")
    return DomainDataset(conform(dataset.images, image_size, channels), dataset.labels, name,
                         class_names=dataset.class_names)


def match_classes(class_names: tuple[str, ...], domain: Domain, key: str) -> Domain:
    """`domain` relabeled into the order of `class_names` (the source's), matching classes by name.

    UserError naming the class names one domain has and the other lacks (a target of other classes
    than the source would train and evaluate with wrong labels)."""
    if domain.class_names == class_names:
        return domain
    missing = [name for name in class_names if name not in domain.class_names]
    extra = [name for name in domain.class_names if name not in class_names]
    if missing or extra:
        def listed(names):
            return ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        parts = ([f"lacks {len(missing)} of the source's classes ({listed(missing)})"] if missing else []) + (
            [f"has {len(extra)} the source lacks ({listed(extra)})"] if extra else [])
        which = "every source" if key.startswith("extra_sources") else "source and target"
        raise UserError(f"data.{key}: {domain.name} {' and '.join(parts)}; {which} must have the same "
                        f"class names (folder or list class names, matched by name)")
    index = {name: i for i, name in enumerate(class_names)}
    mapping = torch.tensor([index[name] for name in domain.class_names] + [UNLABELED], dtype=torch.int64)
    return domain.with_labels(mapping[domain.labels], class_names)  # -1 indexes the last entry: -1


def build_domains(data, seed: int, root: Path | None = None, workers: int = 0, report=None,
                  source_classes: tuple[str, ...] | None = None) -> Domains:
    """All domains of a recipe's `data` section, their classes matched by name to the source's.

    A source-free run (data.source null) has no source domain: its target domains are matched to
    `source_classes`, the class names of the source classifier it starts from.

    The source is data.source followed by data.extra_sources (multi-source), merged in that order into
    one labeled set named '<first>+<second>...'. The target training set keeps the labels of
    `target_labels_per_class` images per class (chosen with the seed) and hides all others (label -1).
    `data.memory_budget_gb` is shared: a file domain read into memory takes its decoded size from what
    the domains after it may use.
    """
    memory_left = data.memory_budget_gb

    def load(key, spec=None):
        nonlocal memory_left
        spec = spec or getattr(data, key)
        if spec is None:
            return None
        domain = build_domain(spec, data.image_size, data.channels, seed, root, workers, data.memory_budget_gb,
                              f"data.{key}", report, memory_left)
        if spec.name in FILE_DATASETS and isinstance(domain, DomainDataset):
            memory_left -= domain.images.numel() / GB
        return domain if key == "source" else match_classes(class_names, domain, key)

    source = load("source")
    class_names = source.class_names if source is not None else list(source_classes)
    parts = [source, *(load(f"extra_sources[{index}]", spec) for index, spec in enumerate(data.extra_sources))]
    if len(parts) > 1:
        source = concatenate(parts, "+".join(part.name for part in parts), class_names)
    target = load("target")
    labels = torch.full_like(target.labels, UNLABELED)
    if data.target_labels_per_class:
        keep = per_class_indices(target.labels, data.target_labels_per_class, seed, target.num_classes)
        labels[keep] = target.labels[keep]
    return Domains(source=source, target=target.with_labels(labels), target_test=load("target_test"),
                   source_test=load("source_test"))
