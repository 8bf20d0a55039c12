"""StarGAN's networks (Choi et al., CVPR 2018; as the authors' model.py), sized to the image.

Generator G(x, c): the one-hot target domain c is tiled into extra input channels; conv 7×7,
`downsamplings` stride-2 convs 4×4, `blocks` residual blocks, as many transposed convs 4×4, conv
7×7, tanh; instance norm with affine parameters and running statistics after every conv but the
last, no conv bias. Discriminator: `layers` stride-2 convs 4×4 (with bias, leaky ReLU 0.01, no
norm), then a source head (conv 3×3 -> a patch map of real/fake scores) and a domain-classification
head (conv with the kernel the size of the last map -> one logit per domain).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InstanceNorm(nn.InstanceNorm2d):
    """The authors' `InstanceNorm2d(affine=True, track_running_stats=True)`: in training, normalises by
    the image's statistics and updates the running ones, exactly as theirs. Out of training it still
    normalises by the image's statistics (the authors translate with the networks in training mode;
    eval mode would switch to the running statistics) and leaves the running ones alone."""

    def __init__(self, channels: int):
        super().__init__(channels, affine=True, track_running_stats=True)

    def forward(self, x):
        if self.training:
            return super().forward(x)
        return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1, bias=False), InstanceNorm(width),
                                  nn.ReLU(inplace=True), nn.Conv2d(width, width, 3, 1, 1, bias=False),
                                  InstanceNorm(width))

    def forward(self, x):
        return x + self.main(x)


class StarGenerator(nn.Module):
    """G(x, c): C×H×W images in [-1, 1] and N×domains one-hot c -> C×H×W images in domain c's style."""

    def __init__(self, channels: int, domains: int, ngf: int = 64, blocks: int = 6, downsamplings: int = 2):
        super().__init__()
        self.domains = domains
        layers = [nn.Conv2d(channels + domains, ngf, 7, 1, 3, bias=False), InstanceNorm(ngf), nn.ReLU(inplace=True)]
        width = ngf
        for _ in range(downsamplings):
            layers += [nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False), InstanceNorm(2 * width), nn.ReLU(inplace=True)]
            width *= 2
        layers += [ResidualBlock(width) for _ in range(blocks)]
        for _ in range(downsamplings):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), InstanceNorm(width // 2),
                       nn.ReLU(inplace=True)]
            width //= 2
        layers += [nn.Conv2d(width, channels, 7, 1, 3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        c = c.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return self.main(torch.cat([x, c], 1))


class StarDiscriminator(nn.Module):
    """D(x) = (N×1×h×w real/fake scores, N×domains logits) for C×size×size images."""

    def __init__(self, channels: int, domains: int, image_size: int, ndf: int = 64, layers: int = 6):
        super().__init__()
        blocks, width = [nn.Conv2d(channels, ndf, 4, 2, 1), nn.LeakyReLU(0.01)], ndf
        for _ in range(1, layers):
            blocks += [nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.01)]
            width *= 2
        self.main = nn.Sequential(*blocks)
        self.source_head = nn.Conv2d(width, 1, 3, 1, 1, bias=False)
        self.domain_head = nn.Conv2d(width, domains, image_size // 2 ** layers, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.main(x)
        return self.source_head(h), self.domain_head(h).flatten(1)


class ConditionedGenerator(nn.Module):
    """x -> G(x, c) for one fixed target domain: a one-domain translator for `translate_images`. The
    domain index is a buffer, so that its state (and the translation cache's weights hash) names it."""

    def __init__(self, generator: StarGenerator, domain: int):
        super().__init__()
        self.generator = generator
        self.register_buffer("domain", torch.tensor(domain))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = F.one_hot(torch.full((len(x),), int(self.domain), device=x.device), self.generator.domains)
        return self.generator(x, c)
