"""Deep CORAL: correlation alignment (Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain
Adaptation", ECCV 2016 workshops)."""
from __future__ import annotations

import torch
from torch import nn


def covariance(rows: torch.Tensor) -> torch.Tensor:
    """C = (1/(n−1)) (X − 1 x̄)ᵀ (X − 1 x̄) of an n×d matrix X (rows are samples; n ≥ 2), in float32 with
    autocast off (bf16 products would leave C_s − C_t mostly rounding noise)."""
    rows = rows.float()
    with torch.autocast(rows.device.type, enabled=False):
        centred = rows - rows.mean(0, keepdim=True)
        return centred.t() @ centred / (len(rows) - 1)


def coral(source_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """The CORAL loss of two feature batches (d features each):

        L_coral = ‖C_s − C_t‖²_F / (4 d²)

    with C the unbiased covariance of each batch (`covariance`). 0 when the batches have equal
    covariances (whatever their means); it aligns second-order statistics only.
    """
    dimension = source_features.shape[1]
    difference = covariance(source_features) - covariance(target_features)
    return (difference * difference).sum() / (4 * dimension ** 2)


class CorrelationAlignmentLoss(nn.Module):
    """`coral` of the source and target features as a transfer loss: `forward(f_s, f_t, z_s, z_t)`
    returns (L_coral, {}). It has no chance value."""

    chance = None

    def forward(self, source_features: torch.Tensor, target_features: torch.Tensor,
                source_logits: torch.Tensor | None = None, target_logits: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict]:
        return coral(source_features, target_features), {}
