"""The one classifier every method trains: timm backbone -> bottleneck (Linear+BN+ReLU) -> linear head."""
from __future__ import annotations

import copy
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.data import resolve_model_data_config
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


class BackboneInput(nn.Module):
    """Our images as a pretrained backbone expects them (timm's data config of the backbone).

    Images come in [-1, 1] at the recipe's size; the backbone was trained on images normalised with
    its own per-channel mean and std at its own input size. So the image is resized (bilinear) to
    `size` when it differs, then mapped affinely: y = ((x + 1) / 2 − mean) / std = x · 0.5/std +
    (0.5 − mean)/std. Fixed constants, not parameters, and not in the state dict (they follow from
    the backbone's name). Every adapter keeps feeding [-1, 1] images; CycleGAN's stay in [-1, 1].
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], size: tuple[int, int]):
        super().__init__()
        mean, std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        self.register_buffer("scale", 0.5 / std, persistent=False)
        self.register_buffer("shift", (0.5 - mean) / std, persistent=False)
        self.size = tuple(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return x * self.scale + self.shift


def backbone_input(net: nn.Module, in_chans: int) -> BackboneInput:
    """The BackboneInput of a timm model, from ``timm.data.resolve_model_data_config``; a grey
    input (in_chans 1, timm sums the first convolution's weights over RGB) takes the mean of the
    RGB means and stds."""
    config = resolve_model_data_config(net)
    mean, std = tuple(config["mean"]), tuple(config["std"])
    if in_chans != len(mean):
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    return BackboneInput(mean, std, config["input_size"][-2:])


class DomainClassifier(nn.Module):
    """``head(encoder(x))`` where ``encoder = bottleneck ∘ backbone``.

    `features(x)` is the bottleneck output that feature-level methods align; ADDA swaps in a
    separately trained copy of `encoder` for the target domain. A pretrained backbone is
    ``Sequential(BackboneInput, timm model)``; `pretrained` and `backbone_lr_multiplier` tell
    the optimiser how to treat it (see adapters/base.py `parameter_groups`).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, bottleneck_dim: int, num_classes: int,
                 pretrained: bool = False, backbone_lr_multiplier: float = 1.0):
        super().__init__()
        bottleneck = nn.Sequential(nn.Linear(feature_dim, bottleneck_dim), nn.BatchNorm1d(bottleneck_dim), nn.ReLU())
        self.encoder = nn.Sequential(backbone, bottleneck)
        self.head = nn.Linear(bottleneck_dim, num_classes)
        self.num_classes = num_classes
        self.feature_dim = bottleneck_dim
        self.pretrained = pretrained
        self.backbone_lr_multiplier = backbone_lr_multiplier

    @property
    def backbone(self) -> nn.Module:
        return self.encoder[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor, with_features: bool = False):
        """The class logits head(encoder(x)); with `with_features`, (features, logits): one call for the
        steps that use both (a data-parallel wrapper reduces the gradients of what its forward ran)."""
        features = self.encoder(x)
        logits = self.head(features)
        return (features, logits) if with_features else logits

    def copy_encoder(self) -> nn.Sequential:
        return copy.deepcopy(self.encoder)


def create_classifier(backbone: str, in_chans: int, image_size: int, num_classes: int = 10,
                      bottleneck_dim: int = 256, pretrained: bool = False, checkpoint: str | None = None,
                      backbone_lr_multiplier: float = 1.0, fetch_weights: bool = True) -> DomainClassifier:
    """Build the shared classifier; the backbone is ``timm.create_model(backbone, num_classes=0, ...)``.

    With `pretrained`, the backbone starts from timm's pretrained weights (downloaded, or read from
    the Hugging Face cache), or from the local file `checkpoint` (a state dict, .pth/.bin or
    .safetensors, read by timm weights-only: a file holding anything else is refused, nothing in it
    runs); its input is its own normalisation and size (`BackboneInput`). `fetch_weights=False`
    builds the same architecture without loading those weights (a run's own weights come next).
    """
    check_backbone(backbone)
    kwargs = {"img_size": image_size} if backbone in BACKBONES else {}
    load = pretrained and fetch_weights
    if load and checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise UserError(f"classifier.checkpoint: file not found: {checkpoint}")
        kwargs["pretrained_cfg_overlay"] = {"file": str(checkpoint)}
    try:
        net = timm.create_model(backbone, pretrained=load, num_classes=0, in_chans=in_chans, **kwargs)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - a failed weight download or load surfaces as many error types
        if not load:
            raise
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        if checkpoint is not None:
            raise UserError(f"classifier.checkpoint: {checkpoint} is not a state dict of '{backbone}' weights "
                            f"({reason[:300]})") from None
        raise UserError(
            f"classifier.pretrained: could not load pretrained weights for '{backbone}' ({reason}). This needs a "
            f"network connection or the weights in the Hugging Face cache ($HF_HOME); set "
            f"classifier.checkpoint=FILE to read them from a local file, or classifier.pretrained=false to train "
            f"from scratch"
        ) from None
    if pretrained:
        net = nn.Sequential(backbone_input(net, in_chans), net)
    was_training = net.training
    net.eval()
    with torch.no_grad():
        feature_dim = net(torch.zeros(1, in_chans, image_size, image_size)).flatten(1).shape[1]
    net.train(was_training)
    return DomainClassifier(net, feature_dim, bottleneck_dim, num_classes, pretrained, backbone_lr_multiplier)
