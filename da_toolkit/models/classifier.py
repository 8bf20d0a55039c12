"""The one classifier every method trains: timm backbone -> bottleneck (Linear+BN+ReLU) -> linear head."""
from __future__ import annotations

import copy

import timm
import torch
from torch import nn

from da_toolkit.errors import UserError
from da_toolkit.models.digit_backbones import BACKBONES


def check_backbone(name: str, key: str = "classifier.backbone") -> None:
    """Raise a UserError unless `name` is a digit backbone or a timm model."""
    if not timm.is_model(name):
        from da_toolkit.registry import did_you_mean

        hint = did_you_mean(name, BACKBONES.names() + timm.list_models())
        raise UserError(
            f"{key}: unknown backbone '{name}'{hint} (digit backbones: {', '.join(BACKBONES.names())}; "
            f"or any of timm's {len(timm.list_models())} models, see timm.list_models())"
        )


class DomainClassifier(nn.Module):
    """``head(encoder(x))`` where ``encoder = bottleneck ∘ backbone``.

    `features(x)` is the bottleneck output that feature-level methods align; ADDA swaps in a
    separately trained copy of `encoder` for the target domain.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, bottleneck_dim: int, num_classes: int):
        super().__init__()
        bottleneck = nn.Sequential(nn.Linear(feature_dim, bottleneck_dim), nn.BatchNorm1d(bottleneck_dim), nn.ReLU())
        self.encoder = nn.Sequential(backbone, bottleneck)
        self.head = nn.Linear(bottleneck_dim, num_classes)
        self.num_classes = num_classes
        self.feature_dim = bottleneck_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def copy_encoder(self) -> nn.Sequential:
        return copy.deepcopy(self.encoder)


def create_classifier(backbone: str, in_chans: int, image_size: int, num_classes: int = 10,
                      bottleneck_dim: int = 256, pretrained: bool = False) -> DomainClassifier:
    """Build the shared classifier; the backbone is ``timm.create_model(backbone, num_classes=0, ...)``."""
    check_backbone(backbone)
    kwargs = {"img_size": image_size} if backbone in BACKBONES else {}
    try:
        net = timm.create_model(backbone, pretrained=pretrained, num_classes=0, in_chans=in_chans, **kwargs)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - a failed weight download surfaces as many error types
        if not pretrained:
            raise
        raise UserError(
            f"classifier.pretrained: could not load pretrained weights for '{backbone}' ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). This needs a network connection or the weights in "
            f"the Hugging Face cache ($HF_HOME); set classifier.pretrained=false to train from scratch"
        ) from None
    was_training = net.training
    net.eval()
    with torch.no_grad():
        feature_dim = net(torch.zeros(1, in_chans, image_size, image_size)).flatten(1).shape[1]
    net.train(was_training)
    return DomainClassifier(net, feature_dim, bottleneck_dim, num_classes)
