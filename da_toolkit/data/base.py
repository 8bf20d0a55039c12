"""The domain dataset contract and the helpers every loader shares.

A domain is held in memory as uint8 images (N×C×H×W) and int64 labels (N); label -1 marks an
unlabeled image. Indexing yields ``(image, label)`` with the image as a float tensor in [-1, 1],
so a domain plugs into any torch DataLoader; training code draws batches with `BatchStream`,
which indexes the tensors directly and never bottlenecks training (on a GPU, without a per-batch
copy from the host); evaluation and translation read a dataset batch by batch with
`device_batches` (through pinned memory to a GPU).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from da_toolkit.errors import UserError
from da_toolkit.training.distributed import World, current, shard

UNLABELED = -1


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float in [-1, 1]: x / 127.5 - 1."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255], rounding to the nearest level."""
    return ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round_().to(torch.uint8)


class DomainDataset(Dataset):
    """Images of one domain in memory: ``images`` uint8 N×C×H×W, ``labels`` int64 N (-1 = unlabeled)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, name: str, num_classes: int = 10):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"{name}: images must be uint8 N×C×H×W, got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{name}: {images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)
        self.name = name
        self.num_classes = num_classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return to_float(self.images[index]), int(self.labels[index])

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return f"DomainDataset({self.name!r}, {len(self)} images {c}×{h}×{w})"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, indices: torch.Tensor, name: str | None = None) -> "DomainDataset":
        return DomainDataset(self.images[indices], self.labels[indices], name or self.name, self.num_classes)

    def sample(self, count: int, generator: torch.Generator) -> "DomainDataset":
        """At most `count` images drawn without replacement with `generator`, kept in index order (all of
        them, and no draw, when there are no more than `count`)."""
        if len(self) <= count:
            return self
        return self.subset(torch.randperm(len(self), generator=generator)[:count].sort().values)

    def labeled(self) -> "DomainDataset":
        """Only the images that carry a label."""
        return self.subset(torch.nonzero(self.labels != UNLABELED).flatten(), f"{self.name}[labeled]")

    def without_labels(self) -> "DomainDataset":
        return DomainDataset(self.images, torch.full_like(self.labels, UNLABELED), self.name, self.num_classes)

    def fingerprint(self) -> str:
        """A short hash of images and labels: equal contents give equal fingerprints."""
        digest = hashlib.sha1()
        digest.update(str(tuple(self.images.shape)).encode())
        digest.update(self.images.numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()[:16]


def device_batches(images: torch.Tensor, device: torch.device | str, batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 N×C×H×W `images`, batch by batch in order, as float batches in [-1, 1] on `device`.

    Evaluation and translation read a whole dataset once, so it stays where it is (the CPU) and
    goes to the device a batch at a time, as uint8 (a quarter of float32's bytes), converted there.
    From the CPU to a CUDA GPU each batch is copied through pinned (page-locked) memory: a direct
    transfer that does not block the host, instead of the driver's staged copy of pageable memory.
    """
    device = torch.device(device)
    pin = device.type == "cuda" and images.device.type == "cpu"
    for chunk in images.split(batch_size):
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


class BatchStream:
    """Endless shuffled batches of a domain, as float tensors in [-1, 1] on a device.

    Walks a fresh random permutation each epoch (the last incomplete batch of an epoch is
    dropped when the dataset holds at least one full batch). `state_dict` / `load_state_dict`
    make a resumed run draw exactly the batches an uninterrupted run would, on any device.

    On a GPU the data path has no per-batch host-device copy: the uint8 images and the labels
    move to the device once, each epoch's permutation is drawn on the CPU (by a CPU generator, so
    a GPU run draws the same batches as a CPU run) and moved there once, and a batch is gathered
    and converted to float on the device. The CPU copy of the permutation is what a checkpoint holds.

    Several processes (`world`, default: torch.distributed's, see training/distributed.py): every
    rank walks the same permutation and draws its slice of each global batch of `batch_size`, so
    the ranks' batches together are the 1-process batch and the stream's state is the same on
    every rank. A dataset smaller than the batch gives a global batch of its size rounded down to
    a multiple of the process count.
    """

    def __init__(self, dataset: DomainDataset, batch_size: int, seed: int, device: torch.device | str = "cpu",
                 world: World | None = None):
        if len(dataset) == 0:
            raise ValueError(f"{dataset.name}: cannot draw batches from an empty dataset")
        world = current() if world is None else world
        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        shard(batch_size, world)  # the recipe's batch must split evenly over the ranks
        self.batch_size = min(batch_size, len(dataset) // world.size * world.size)
        if self.batch_size == 0:
            raise UserError(f"{dataset.name}: {len(dataset)} images are fewer than the {world.size} processes")
        self._shard = shard(self.batch_size, world)
        self.generator = torch.Generator().manual_seed(seed)
        self._set_order(torch.randperm(len(dataset), generator=self.generator))
        self._position = 0

    def _set_order(self, order: torch.Tensor) -> None:
        """This epoch's permutation: kept on the CPU (for checkpoints) and once on the device (for indexing)."""
        self._order = order.cpu()
        self._order_on_device = self._order.to(self.device)

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._position + self.batch_size > len(self._order):
            self._set_order(torch.randperm(len(self._order), generator=self.generator))
            self._position = 0
        index = self._order_on_device[self._position:self._position + self.batch_size][self._shard]
        self._position += self.batch_size
        return to_float(self.images[index]), self.labels[index]

    def state_dict(self) -> dict:
        """Generator state (a CPU ByteTensor), this epoch's permutation (on the CPU) and the position in it."""
        return {"generator": self.generator.get_state(), "order": self._order, "position": self._position}

    def load_state_dict(self, state: dict) -> None:
        """Takes the tensors of `state` on any device."""
        self.generator.set_state(state["generator"].cpu())
        self._set_order(state["order"])
        self._position = state["position"]


@dataclass(frozen=True)
class Domains:
    """Everything a run trains and evaluates on.

    source:        labeled source images.
    target:        target training images; unlabeled (-1) except the k-per-class labeled ones.
    target_test:   labeled target test split, used only for the final evaluation.
    source_test:   labeled source test split (source accuracy), or None.
    """

    source: DomainDataset
    target: DomainDataset
    target_test: DomainDataset
    source_test: DomainDataset | None = None
