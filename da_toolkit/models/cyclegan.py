"""CycleGAN's networks (Zhu et al., 2017), as in the reference pytorch-CycleGAN-and-pix2pix.

* `ResnetGenerator`: reflection pad + 7×7 conv stem (ngf), D stride-2 3×3 down-samplings
  (2·ngf, 4·ngf, ...; the reference has D = 2), N residual blocks at 2^D·ngf, D stride-2
  transposed-conv up-samplings, a 7×7 conv to the output channels and tanh. The reference uses
  9 blocks for 256×256 images and 6 for 128×128 and smaller. For small images (≤ 64 px) the
  adapter uses D = 1, so that a 28-px digit is processed at 14×14, not 7×7 (see
  `small_image_defaults`).
* `PatchDiscriminator`: the PatchGAN; a 4×4 stride-2 conv with LeakyReLU 0.2 and no norm,
  ``n_layers − 1`` more stride-2 convs doubling the width (at most 8·ndf), one stride-1 conv and a
  stride-1 conv to one channel. It scores overlapping patches (70×70 receptive field at
  ``n_layers = 3``); the output is a map of logits, one per patch, of side
  ``floor(size / 2^n_layers) − 2``. At 28 px, 3 layers shrink the image 14→7→3→2→1: instance norm
  then normalises 2×2 maps and the "patch map" is one global score, so small images get 2 layers
  (a 5×5 map at 28 px, 6×6 at 32 px, norm over maps of 6×6 or more).

Normalisation is instance norm (no affine parameters, no running statistics) or batch norm;
conv biases are used only with instance norm, as in the reference. Weights are initialised
N(0, 0.02) (norm scales N(1, 0.02), biases 0).
"""
from __future__ import annotations

from typing import Literal

from torch import nn

Norm = Literal["instance", "batch"]

SMALL_IMAGE = 64  # images of at most this many px get the small-image networks


def small_image_defaults(image_size: int) -> dict:
    """Generator down-samplings and PatchGAN layers for a square image of `image_size` px.

    Up to 64 px: one down-sampling (the residual blocks see a 14×14 map at 28 px) and a 2-layer
    PatchGAN (a real patch map: 5×5 at 28 px, 2×2 at 16 px); larger images: the reference's
    2 down-samplings and 3 layers (70×70 patches).
    """
    small = image_size <= SMALL_IMAGE
    return {"downsamplings": 1 if small else 2, "discriminator_layers": 2 if small else 3}


def norm_layer(norm: Norm, channels: int) -> nn.Module:
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    return nn.BatchNorm2d(channels)


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """The reference 'normal' init: conv weights N(0, gain), batch-norm scales N(1, gain), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


class ResnetBlock(nn.Module):
    """x + conv-norm-ReLU-conv-norm(x), both 3×3 convs with reflection padding."""

    def __init__(self, channels: int, norm: Norm):
        super().__init__()
        bias = norm == "instance"
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels),
        )

    def forward(self, x):
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """Image-to-image translator: C_in×H×W in [-1, 1] -> C_out×H×W in [-1, 1] (H, W multiples of 2^downsamplings)."""

    def __init__(self, in_channels: int, out_channels: int, ngf: int = 64, n_blocks: int = 9,
                 norm: Norm = "instance", downsamplings: int = 2):
        super().__init__()
        bias = norm == "instance"
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias), norm_layer(norm, ngf), nn.ReLU(True)]
        for i in range(downsamplings):
            width = ngf * 2 ** i
            layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=bias), norm_layer(norm, 2 * width),
                       nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 2 ** downsamplings, norm) for _ in range(n_blocks)]
        for i in range(downsamplings):
            width = ngf * 2 ** (downsamplings - i)
            layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                       norm_layer(norm, width // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x):
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: C×H×W -> 1×h×w map of real/fake logits, one per overlapping patch."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: Norm = "instance"):
        super().__init__()
        bias = norm == "instance"
        layers = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for n in range(1, n_layers + 1):
            stride = 2 if n < n_layers else 1
            out = ndf * min(2 ** n, 8)
            layers += [nn.Conv2d(width, out, 4, stride=stride, padding=1, bias=bias), norm_layer(norm, out),
                       nn.LeakyReLU(0.2, True)]
            width = out
        layers += [nn.Conv2d(width, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x):
        return self.model(x)

    @staticmethod
    def output_size(image_size: int, n_layers: int) -> int:
        """Side of the patch map for a square input: floor(size / 2^n_layers) - 2 (below 1: too small)."""
        return image_size // 2 ** n_layers - 2
