"""Training-time augmentation of batch tensors (`train.augment`): torchvision transforms v2, drawn per image.

Applied to the batches a classifier trains on, after `BatchStream` made them float in [-1, 1];
never to evaluation, nor to a pixel stage's images. The transforms draw from torch's global
random number generator, whose state every checkpoint holds, so a resumed run draws the same
crops, flips and colours as an uninterrupted one.
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


class AugmentedStream:
    """A BatchStream whose images go through `transform` one by one; its state is the stream's."""

    def __init__(self, stream, transform):
        self.stream = stream
        self.transform = transform

    def __iter__(self) -> "AugmentedStream":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = next(self.stream)
        unit = (images + 1) / 2
        augmented = torch.stack([self.transform(image) for image in unit])
        return augmented.clamp_(0, 1).mul_(2).sub_(1), labels

    def relabel(self, labels: torch.Tensor) -> None:
        self.stream.relabel(labels)

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)
