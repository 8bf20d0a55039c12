"""AFN: stepwise adaptive feature norm (Xu et al., "Larger Norm More Transferable: An Adaptive Feature
Norm Approach for Unsupervised Domain Adaptation", ICCV 2019)."""
from __future__ import annotations

import torch
from torch import nn


def stepwise_feature_norm(features: torch.Tensor, increment: float) -> torch.Tensor:
    """The stepwise AFN term of one batch of features f_i (rows):

        L = mean_i ( ‖f_i‖ − (‖f_i‖.detach() + Δr) )²

    The target of each norm is its current value (no gradient) plus Δr, so one step of gradient
    descent enlarges every feature norm (its gradient is −2Δr f_i / (B ‖f_i‖)). The value is always
    Δr²: watch the norms, not the loss.
    """
    norms = features.float().norm(dim=1)
    return ((norms - (norms.detach() + increment)) ** 2).mean()


class AdaptiveFeatureNormLoss(nn.Module):
    """AFN as a transfer loss over both domains:

        L_afn = L(f_s) + L(f_t)     (`stepwise_feature_norm`, increment Δr)

    `forward(f_s, f_t, z_s, z_t)` returns (L_afn, {"feature_norm/source": mean ‖f_s‖,
    "feature_norm/target": mean ‖f_t‖}). It has no chance value.
    """

    chance = None

    def __init__(self, increment: float = 1.0):
        super().__init__()
        self.increment = increment

    def forward(self, source_features: torch.Tensor, target_features: torch.Tensor,
                source_logits: torch.Tensor | None = None, target_logits: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict]:
        loss = stepwise_feature_norm(source_features, self.increment) + stepwise_feature_norm(target_features,
                                                                                               self.increment)
        return loss, {"feature_norm/source": source_features.detach().float().norm(dim=1).mean(),
                      "feature_norm/target": target_features.detach().float().norm(dim=1).mean()}

    def extra_repr(self) -> str:
        return f"increment={self.increment}"
