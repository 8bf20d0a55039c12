"""The domain contract and the helpers every loader shares.

A domain is a sequence of images with int64 labels (label -1 marks an unlabeled image) and the
names of its classes. It is held one of two ways, and both give the same images for the same files:

* `DomainDataset` — in memory: uint8 images N×C×H×W (digits, small folders);
* `FileDomain` (data/files.py) — streamed: image files decoded, resized and converted on demand,
  by DataLoader workers (photo benchmarks, a user's folder of 10⁵ photos).

Two more domains read on demand: `ShardDomain` (data/shards.py), a translated source set in shard
files, and `ConcatDomain`, domains one after another (`concatenate`: the translated/raw mix).

Every domain offers `read(indices)` (those images as uint8), `chunks(batch_size)` (the whole domain
in order, a uint8 batch at a time: evaluation, features, translation), `subset` / `sample` /
`labeled` / `with_labels`, `in_memory()` and a `fingerprint` (cache keys). Indexing yields
``(image, label)`` with the image as a float tensor in [-1, 1], so a domain plugs into any torch
DataLoader. Training draws batches with `BatchStream`: from memory it indexes the tensors directly
(on a GPU, without a per-batch copy from the host); from files its batches are decoded by DataLoader
workers, in the same seeded order. Evaluation and translation read a domain with `device_batches`
(through pinned memory to a GPU).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from da_toolkit.errors import UserError
from da_toolkit.training.distributed import World, current, shard

UNLABELED = -1


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float in [-1, 1]: x / 127.5 - 1."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255], rounding to the nearest level."""
    return ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round_().to(torch.uint8)


def digit_names(count: int = 10) -> list[str]:
    """Class names "0", "1", ...: the digits, and any domain whose classes have no other names."""
    return [str(index) for index in range(count)]


class Domain(Dataset):
    """What every domain offers; subclasses hold the images (`DomainDataset`, `FileDomain`).

    `labels` int64 N (-1 = unlabeled), `name`, `class_names` (label i is class_names[i]),
    `image_shape` C×H×W. A subclass implements `read`, `subset` and `with_labels`.
    """

    labels: torch.Tensor
    name: str
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def read(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The images at `indices` as uint8 len(indices)×C×H×W."""
        raise NotImplementedError

    def subset(self, indices: torch.Tensor, name: str | None = None) -> "Domain":
        raise NotImplementedError

    def with_labels(self, labels: torch.Tensor, class_names: list[str] | None = None) -> "Domain":
        """The same images with other labels (and class names)."""
        raise NotImplementedError

    def in_memory(self) -> "DomainDataset":
        """The domain decoded into memory (itself when it is there already)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def chunks(self, batch_size: int) -> Iterator[torch.Tensor]:
        """The whole domain in order, `batch_size` uint8 images at a time."""
        for start in range(0, len(self), batch_size):
            yield self.read(torch.arange(start, min(start + batch_size, len(self))))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return to_float(self.read([index])[0]), int(self.labels[index])

    def sample(self, count: int, generator: torch.Generator) -> "Domain":
        """At most `count` images drawn without replacement with `generator`, kept in index order (all of
        them, and no draw, when there are no more than `count`)."""
        if len(self) <= count:
            return self
        return self.subset(torch.randperm(len(self), generator=generator)[:count].sort().values)

    def labeled(self) -> "Domain":
        """Only the images that carry a label."""
        return self.subset(torch.nonzero(self.labels != UNLABELED).flatten(), f"{self.name}[labeled]")

    def without_labels(self) -> "Domain":
        return self.with_labels(torch.full_like(self.labels, UNLABELED))


class DomainDataset(Domain):
    """Images of one domain in memory: ``images`` uint8 N×C×H×W, ``labels`` int64 N (-1 = unlabeled).

    `class_names` default to "0", "1", ... for `num_classes` classes."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, name: str, num_classes: int = 10,
                 class_names: list[str] | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"{name}: images must be uint8 N×C×H×W, got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{name}: {images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)
        self.name = name
        self.class_names = list(class_names) if class_names is not None else digit_names(num_classes)

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return f"DomainDataset({self.name!r}, {len(self)} images {c}×{h}×{w})"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def read(self, indices) -> torch.Tensor:
        return self.images[torch.as_tensor(indices, dtype=torch.int64)]

    def chunks(self, batch_size: int) -> Iterator[torch.Tensor]:
        yield from self.images.split(batch_size)

    def subset(self, indices: torch.Tensor, name: str | None = None) -> "DomainDataset":
        return DomainDataset(self.images[indices], self.labels[indices], name or self.name,
                             class_names=self.class_names)

    def with_labels(self, labels: torch.Tensor, class_names: list[str] | None = None) -> "DomainDataset":
        return DomainDataset(self.images, labels, self.name, class_names=class_names or self.class_names)

    def in_memory(self) -> "DomainDataset":
        return self

    def fingerprint(self) -> str:
        """A short hash of images and labels: equal contents give equal fingerprints."""
        digest = hashlib.sha1()
        digest.update(str(tuple(self.images.shape)).encode())
        digest.update(self.images.numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()[:16]


class ConcatDomain(Domain):
    """Domains one after another, each image read on demand from the domain that holds it (a mix of
    streamed domains). `positions[i]` is where image i lies in the concatenation of `parts`."""

    def __init__(self, parts: list[Domain], positions: torch.Tensor, labels: torch.Tensor, name: str,
                 class_names: list[str]):
        self.parts, self.positions, self.labels = list(parts), positions.to(torch.int64), labels.to(torch.int64)
        self.name, self.class_names = name, list(class_names)
        self.starts = torch.tensor([0, *torch.tensor([len(part) for part in parts]).cumsum(0).tolist()])
        self.workers = max(getattr(part, "workers", 0) for part in parts)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.parts[0].image_shape

    def read(self, indices) -> torch.Tensor:
        positions = self.positions[torch.as_tensor(indices, dtype=torch.int64)]
        owners = torch.bucketize(positions, self.starts[1:], right=True)
        out = torch.empty((len(positions), *self.image_shape), dtype=torch.uint8)
        for owner in owners.unique().tolist():
            where = torch.nonzero(owners == owner).flatten()
            out[where] = self.parts[owner].read(positions[where] - self.starts[owner])
        return out

    def _like(self, positions, labels, name=None, class_names=None) -> "ConcatDomain":
        return ConcatDomain(self.parts, positions, labels, name or self.name, class_names or self.class_names)

    def subset(self, indices: torch.Tensor, name: str | None = None) -> "ConcatDomain":
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return self._like(self.positions[indices], self.labels[indices], name)

    def with_labels(self, labels: torch.Tensor, class_names: list[str] | None = None) -> "ConcatDomain":
        return self._like(self.positions, labels, class_names=class_names)

    def in_memory(self) -> "DomainDataset":
        images = list(self.chunks(4096)) or [torch.empty((0, *self.image_shape), dtype=torch.uint8)]
        return DomainDataset(torch.cat(images), self.labels, self.name, class_names=self.class_names)

    def fingerprint(self) -> str:
        digest = hashlib.sha1(" ".join(part.fingerprint() for part in self.parts).encode())
        digest.update(self.positions.numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()[:16]


def concatenate(parts: list[Domain], name: str, class_names: list[str]) -> Domain:
    """The images and labels of `parts` one after another: in memory when every part is, else read on
    demand from the parts (`ConcatDomain`)."""
    labels = torch.cat([part.labels for part in parts])
    if all(isinstance(part, DomainDataset) for part in parts):
        return DomainDataset(torch.cat([part.images for part in parts]), labels, name, class_names=class_names)
    return ConcatDomain(parts, torch.arange(len(labels)), labels, name, class_names)


def device_batches(domain: Domain, device: torch.device | str, batch_size: int) -> Iterator[torch.Tensor]:
    """The images of `domain` (or a uint8 N×C×H×W tensor), batch by batch in order, as float batches in
    [-1, 1] on `device`.

    Evaluation and translation read a whole domain once, so it stays where it is (memory or files)
    and goes to the device a batch at a time, as uint8 (a quarter of float32's bytes), converted
    there. From the CPU to a CUDA GPU each batch is copied through pinned (page-locked) memory: a
    direct transfer that does not block the host, instead of the driver's staged copy of pageable memory.
    """
    device = torch.device(device)
    chunks = domain.split(batch_size) if isinstance(domain, torch.Tensor) else domain.chunks(batch_size)
    for chunk in chunks:
        pin = device.type == "cuda" and chunk.device.type == "cpu"
        yield to_float(chunk.pin_memory().to(device, non_blocking=True) if pin else chunk.to(device))


def conform(images: torch.Tensor, image_size: int, channels: int) -> torch.Tensor:
    """Resize uint8 N×C×H×W images to N×channels×image_size×image_size.

    Bilinear resizing with antialiasing; grey -> colour repeats the channel, colour -> grey takes
    the luminance 0.299 R + 0.587 G + 0.114 B.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    out = images
    if out.shape[1] != channels:
        if channels == 3:
            out = out.expand(-1, 3, -1, -1)
        else:
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            out = (out.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if out.shape[-2:] != (image_size, image_size):
        resized = []
        for chunk in out.split(4096):
            resized.append(
                F.interpolate(chunk.float(), size=(image_size, image_size), mode="bilinear",
                              antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
            )
        out = torch.cat(resized)
    return out.contiguous()


def per_class_indices(labels: torch.Tensor, k: int, seed: int, num_classes: int = 10) -> torch.Tensor:
    """Indices of k images of each class, drawn without replacement, deterministic given the seed.

    Classes with fewer than k images contribute all they have. The result is sorted.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in range(num_classes):
        members = torch.nonzero(labels == cls).flatten()
        order = torch.randperm(len(members), generator=generator)
        chosen.append(members[order[:k]])
    return torch.cat(chosen).sort().values


class Walk:
    """The seeded order in which a `BatchStream` visits a domain: a fresh random permutation of its
    `size` indices each epoch, walked a global batch at a time (the last incomplete batch of an
    epoch is dropped). The state (generator, this epoch's permutation, position) is all a resumed
    run needs to draw the batches an uninterrupted run draws."""

    def __init__(self, size: int, batch_size: int, seed: int):
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(size, generator=self.generator)
        self.position = 0

    def next(self) -> tuple[torch.Tensor, bool]:
        """(the next global batch's indices, whether a new epoch's permutation was drawn for it)."""
        fresh = self.position + self.batch_size > len(self.order)
        if fresh:
            self.order = torch.randperm(len(self.order), generator=self.generator)
            self.position = 0
        batch = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return batch, fresh

    def relabel(self, labels: torch.Tensor) -> None:
        """Give the stream's images these labels (one per image of the domain) from the next batch on; the
        images and their order stay as they were (a self-training method's pseudo-labels)."""
        self.labels = labels.to(self.device)

    def state_dict(self) -> dict:
        """Generator state (a CPU ByteTensor), this epoch's permutation (on the CPU) and the position in it."""
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        """Takes the tensors of `state` on any device."""
        self.generator.set_state(state["generator"].cpu())
        self.order = state["order"].cpu()
        self.position = state["position"]


class _WalkedBatches:
    """A DataLoader batch sampler: this rank's slice of every global batch of a `Walk` that starts
    from `state`, for ever. It runs ahead of training (the workers prefetch), so it walks its own copy."""

    def __init__(self, state: dict, size: int, batch_size: int, seed: int, rank_slice: slice):
        self.state, self.size, self.batch_size, self.seed, self.rank_slice = state, size, batch_size, seed, rank_slice

    def __iter__(self):
        walk = Walk(self.size, self.batch_size, self.seed)
        walk.load_state_dict(self.state)
        while True:
            yield walk.next()[0][self.rank_slice].tolist()


class _Decoded(Dataset):
    """A domain's images as uint8 tensors with their index and "" — or, for a file that cannot be read,
    a blank image, its index and the error (raised by `decoded_batches` in the main process, as one line)."""

    def __init__(self, domain: Domain):
        self.domain = domain

    def __len__(self) -> int:
        return len(self.domain)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        try:
            return self.domain.read([index])[0], index, ""
        except UserError as error:
            return torch.zeros(self.domain.image_shape, dtype=torch.uint8), index, str(error)


def decoded_batches(domain: Domain, batch_sampler, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images, indices) of each batch of indices `batch_sampler` yields, in its order, decoded by a
    DataLoader in `domain.workers` worker processes (persistent, prefetching 4 batches each; pinned memory
    when the batches go to a CUDA GPU). A file that cannot be read is a UserError naming it.

    The loader draws its workers' base seed from a generator of its own: drawn from torch's global
    generator, it would shift the run's random stream, and a streamed run would initialise the
    networks it builds after its first batch differently from an in-memory run."""
    workers = getattr(domain, "workers", 0)
    loader = DataLoader(_Decoded(domain), batch_sampler=batch_sampler, num_workers=workers,
                        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
                        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))
    for images, indices, errors in loader:
        failed = next((error for error in errors if error), None)
        if failed:
            raise UserError(f"{failed} (`skip_unreadable: true` on the domain skips unreadable images when it is read "
                            f"into memory)")
        yield images, indices


class BatchStream:
    """Endless shuffled batches of a domain, as float tensors in [-1, 1] on a device.

    Walks a fresh random permutation each epoch (`Walk`: the last incomplete batch of an epoch is
    dropped when the dataset holds at least one full batch). `state_dict` / `load_state_dict` make a
    resumed run draw exactly the batches an uninterrupted run would, on any device.

    From memory (`DomainDataset`), on a GPU the data path has no per-batch host-device copy: the
    uint8 images and the labels move to the device once, each epoch's permutation is drawn on the
    CPU (by a CPU generator, so a GPU run draws the same batches as a CPU run) and moved there
    once, and a batch is gathered and converted to float on the device. From files (`FileDomain`),
    DataLoader workers decode the same batches in the same order ahead of training; only the
    position of the consumed batches is state, so prefetching never changes what a resume draws.

    Several processes (`world`, default: torch.distributed's, see training/distributed.py): every
    rank walks the same permutation and draws its slice of each global batch of `batch_size`, so
    the ranks' batches together are the 1-process batch and the stream's state is the same on
    every rank. A dataset smaller than the batch gives a global batch of its size rounded down to
    a multiple of the process count.
    """

    def __init__(self, dataset: Domain, batch_size: int, seed: int, device: torch.device | str = "cpu",
                 world: World | None = None):
        if len(dataset) == 0:
            raise ValueError(f"{dataset.name}: cannot draw batches from an empty dataset")
        world = current() if world is None else world
        self.device = torch.device(device)
        self.dataset, self.seed = dataset, seed
        shard(batch_size, world)  # the recipe's batch must split evenly over the ranks
        self.batch_size = min(batch_size, len(dataset) // world.size * world.size)
        if self.batch_size == 0:
            raise UserError(f"{dataset.name}: {len(dataset)} images are fewer than the {world.size} processes")
        self._shard = shard(self.batch_size, world)
        self.walk = Walk(len(dataset), self.batch_size, seed)
        self.in_memory = isinstance(dataset, DomainDataset)
        if self.in_memory:
            self.images = dataset.images.to(self.device)
            self._order_on_device = self.walk.order.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self._decoded = None  # the workers' batches (from files), started at the first batch

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.dataset.image_shape

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.in_memory and self._decoded is None:
            sampler = _WalkedBatches(self.walk.state_dict(), len(self.dataset), self.batch_size, self.seed, self._shard)
            self._decoded = decoded_batches(self.dataset, sampler, self.device)
        start = self.walk.position
        indices, fresh = self.walk.next()
        if self.in_memory:
            if fresh:
                self._order_on_device = self.walk.order.to(self.device)
                start = 0
            index = self._order_on_device[start:start + self.batch_size][self._shard]
            return to_float(self.images[index]), self.labels[index]
        images, decoded = next(self._decoded)
        index = indices[self._shard]
        if not torch.equal(decoded, index):
            raise RuntimeError(f"{self.dataset.name}: the workers decoded other images than the stream's batch")
        return to_float(images.to(self.device, non_blocking=True)), self.labels[index.to(self.device)]

    def relabel(self, labels: torch.Tensor) -> None:
        """Give the stream's images these labels (one per image of the domain) from the next batch on; the
        images and their order stay as they were (a self-training method's pseudo-labels)."""
        self.labels = labels.to(self.device)

    def state_dict(self) -> dict:
        """Generator state (a CPU ByteTensor), this epoch's permutation (on the CPU) and the position in it."""
        return self.walk.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Takes the tensors of `state` on any device; workers restart from there."""
        self.walk.load_state_dict(state)
        if self.in_memory:
            self._order_on_device = self.walk.order.to(self.device)
        self._decoded = None


@dataclass(frozen=True)
class Domains:
    """Everything a run trains and evaluates on.

    source:        labeled source images, or None (a source-free run).
    target:        target training images; unlabeled (-1) except the k-per-class labeled ones.
    target_test:   labeled target test split, used only for the final evaluation.
    source_test:   labeled source test split (source accuracy), or None.
    """

    source: Domain | None
    target: Domain
    target_test: Domain
    source_test: Domain | None = None
