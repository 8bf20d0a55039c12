"""The domain discriminator of DANN and ADDA: an MLP on the classifier's features -> one logit."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class DomainDiscriminator(nn.Sequential):
    """``[Linear -> (BatchNorm) -> ReLU -> (Dropout)] × len(hidden) -> Linear -> 1 logit``.

    The logit scores "this feature came from the source domain" (σ(logit) = D(f)). The
    constructor's defaults are 1024-1024 with batch norm and dropout 0.5; the adversarial family's
    recipes (DANN, CDAN) default to dropout 0, Transfer-Learning-Library's batch-norm variant. ADDA (Tzeng et al. 2017) uses ``hidden=(500, 500), batch_norm=False,
    dropout=0`` (two 500-unit ReLU layers, as in the reference implementation).
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (1024, 1024), batch_norm: bool = True,
                 dropout: float = 0.5):
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, 1))
        super().__init__(*layers)
        self.in_features = in_features

    def forward(self, features):
        """Logits of shape (N,) for features of shape (N, in_features)."""
        return super().forward(features).squeeze(1)
