"""Training-time augmentation of batch tensors: torchvision transforms v2, drawn per image.

`train.augment` (`Augment`) changes the batches a classifier trains on, after `BatchStream` made
them float in [-1, 1]; never evaluation, nor a pixel stage's images. The self-training methods
add their own views of a target batch: a weak one (`weak_transform`: a small translation) and a
strong one (`strong_transform`: RandAugment and Cutout). The transforms draw from torch's global
random number generator, whose state every checkpoint holds, so a resumed run draws the same
crops, flips, colours and operations as an uninterrupted one.
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2


class Augment:
    """The transforms of an `AugmentConfig`, each image of a batch drawing its own parameters:

    * random_resized_crop s < 1: a crop of area share in [s, 1] and aspect ratio in [3/4, 4/3],
      resized back to the image size (bilinear);
    * hflip: a mirror image with probability ½;
    * color_jitter j > 0: brightness, contrast and saturation factors drawn from [1 − j, 1 + j]
      (a grey image: brightness and contrast).

    The transforms see an image in [0, 1] (x' = (x + 1) / 2), as torchvision expects floats, and
    return it to [-1, 1].
    """

    def __init__(self, config):
        self.config = config

    def __call__(self, stream):
        """`stream` itself when nothing is switched on, else a stream of its augmented batches."""
        return AugmentedStream(stream, self.transform(stream.image_shape[-1])) if self.config.active else stream

    def transform(self, image_size: int) -> v2.Compose:
        c = self.config
        steps = []
        if c.random_resized_crop < 1:
            steps.append(v2.RandomResizedCrop(image_size, scale=(c.random_resized_crop, 1.0), antialias=True))
        if c.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if c.color_jitter > 0:
            steps.append(v2.ColorJitter(brightness=c.color_jitter, contrast=c.color_jitter,
                                        saturation=c.color_jitter))
        return v2.Compose(steps)


def weak_transform(translate: float) -> v2.RandomAffine:
    """A translation of up to `translate` × the image side in each direction (the empty border black):
    FixMatch's weak augmentation without its flip, which would change what a digit means."""
    return v2.RandomAffine(degrees=0, translate=(translate, translate))


def strong_transform(operations: int, magnitude: int, cutout: float) -> v2.Compose:
    """FixMatch's strong augmentation (Sohn et al. 2020), on an image in [0, 1] made uint8 as
    torchvision's RandAugment expects, and back:

    * RandAugment (Cubuk et al. 2020; torchvision's): `operations` operations drawn from identity,
      shear x/y, translate x/y, rotate, brightness, colour, contrast, sharpness, posterize, solarize,
      autocontrast and equalize, each at `magnitude` of 31 bins (10: rotations of 10°, shears of
      0.1). None flips or mirrors, so a digit keeps its meaning;
    * Cutout (DeVries & Taylor 2017) as torchvision's RandomErasing: a rectangle of area share in
      [0.02, cutout] and aspect ratio in [0.3, 3.3] filled with mid-grey; 0: off.
    """
    steps = [v2.ToDtype(torch.uint8, scale=True), v2.RandAugment(operations, magnitude)]
    if cutout > 0:
        steps.append(v2.RandomErasing(p=1.0, scale=(min(0.02, cutout), cutout), value=128))
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True)])


def augment_images(images: torch.Tensor, transform) -> torch.Tensor:
    """`images` (B×C×H×W in [-1, 1]), each through `transform` (on [0, 1], as torchvision expects floats)."""
    unit = (images + 1) / 2
    augmented = torch.stack([transform(image) for image in unit])
    return augmented.clamp_(0, 1).mul_(2).sub_(1)


class AugmentedStream:
    """A BatchStream whose images go through `transform` one by one; its state is the stream's."""

    def __init__(self, stream, transform):
        self.stream = stream
        self.transform = transform

    def __iter__(self) -> "AugmentedStream":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = next(self.stream)
        return augment_images(images, self.transform), labels

    def relabel(self, labels: torch.Tensor) -> None:
        self.stream.relabel(labels)

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)
