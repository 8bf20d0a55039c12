"""Small digit backbones from the domain-adaptation literature, registered into timm.

After import, ``timm.create_model("lenet", num_classes=0, in_chans=1)`` works like any timm model.
With ``num_classes=0`` (how the shared classifier uses them) a backbone returns its flattened
convolutional features; otherwise a linear head maps them to class scores.
"""
from __future__ import annotations

import timm
import torch
from torch import nn

from da_toolkit.errors import UserError
from da_toolkit.registry import Registry

BACKBONES = Registry("backbone")


def register_backbone(fn):
    """Register `fn` in timm's registry and list it in BACKBONES under its function name."""
    BACKBONES.register(fn.__name__)(fn)
    return timm.models.register_model(fn)


class DigitBackbone(nn.Module):
    """A convolutional feature extractor followed by an optional linear head (timm's model interface)."""

    def __init__(self, features: nn.Sequential, num_classes: int, in_chans: int, img_size: int):
        super().__init__()
        self.features = features
        self.num_features = flat_size(features, in_chans, img_size)
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def flat_size(layers: nn.Module, in_chans: int, img_size: int) -> int:
    """How many numbers `layers` put out per image of in_chans x img_size x img_size (flattened)."""
    with torch.no_grad():
        return layers(torch.zeros(1, in_chans, img_size, img_size)).flatten(1).shape[1]


def _lenet_convolutions(in_chans: int) -> list[nn.Module]:
    return [nn.Conv2d(in_chans, 20, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(20, 50, kernel_size=5), nn.Dropout2d(0.5), nn.MaxPool2d(2), nn.ReLU()]


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        raise UserError(f"classifier.pretrained: the '{name}' backbone has no pretrained weights; set it to false")


@register_backbone
def lenet(pretrained: bool = False, num_classes: int = 10, in_chans: int = 1, img_size: int = 28, **_) -> DigitBackbone:
    """LeNet's convolutions, DANN's and ADDA's MNIST<->USPS net without its fc(500): 800 features at 28x28.

    conv5(20)-pool-conv5(50)-dropout-pool. ADDA's and Transfer-Learning-Library's LeNet continue with
    fc(500)-ReLU-dropout (`lenet_fc500`); here the classifier's bottleneck (Linear-BatchNorm-ReLU, 256)
    takes that layer's place."""
    _no_pretrained("lenet", pretrained)
    return DigitBackbone(nn.Sequential(*_lenet_convolutions(in_chans)), num_classes, in_chans, img_size)


@register_backbone
def lenet_fc500(pretrained: bool = False, num_classes: int = 10, in_chans: int = 1, img_size: int = 28,
                **_) -> DigitBackbone:
    """LeNet with its fc(500)-ReLU-dropout, as ADDA and Transfer-Learning-Library have it: 500 features.

    `lenet`'s convolutions, then the fully connected layer (dropout 0.5), before the classifier's
    bottleneck. For like-for-like comparisons with them (benchmarks/peer_side_by_side.py --peer-backbone);
    not the digit recipes' default."""
    _no_pretrained("lenet_fc500", pretrained)
    convolutions = _lenet_convolutions(in_chans)
    flat = flat_size(nn.Sequential(*convolutions), in_chans, img_size)
    features = nn.Sequential(*convolutions, nn.Flatten(1), nn.Linear(flat, 500), nn.ReLU(), nn.Dropout(0.5))
    return DigitBackbone(features, num_classes, in_chans, img_size)


@register_backbone
def dtn(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, img_size: int = 32, **_) -> DigitBackbone:
    """DTN (CyCADA's SVHN->MNIST net): three stride-2 conv5 64-128-256 with BN, dropout, ReLU (4096 features at 32x32).

    CyCADA's and Transfer-Learning-Library's DTN continue with fc(512)-BatchNorm-ReLU-dropout; here the
    classifier's bottleneck takes that layer's place, as for `lenet`."""
    _no_pretrained("dtn", pretrained)

    def block(cin: int, cout: int, dropout: float) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 5, stride=2, padding=2), nn.BatchNorm2d(cout), nn.Dropout2d(dropout), nn.ReLU()]

    features = nn.Sequential(*block(in_chans, 64, 0.1), *block(64, 128, 0.3), *block(128, 256, 0.5))
    return DigitBackbone(features, num_classes, in_chans, img_size)
