"""Losses on the singular values of a batch: BNM (Cui et al., "Towards Discriminability and Diversity:
Batch Nuclear-norm Maximization under Label Insufficient Situations", CVPR 2020) on the target
predictions and BSP (Chen et al., "Transferability vs. Discriminability: Batch Spectral Penalization for
Adversarial Domain Adaptation", ICML 2019) on the features. Singular values are computed in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def batch_nuclear_norm_loss(logits: torch.Tensor) -> torch.Tensor:
    """BNM of a batch of (target) class logits Z (B×C):

        L_bnm = −‖softmax(Z)‖_* / B,   ‖A‖_* = Σ_i σ_i(A) the nuclear norm

    Minimising it maximises the nuclear norm of the prediction matrix, which is at most √min(B, C)
    times its Frobenius norm (large when predictions are confident: discriminability) and large
    when many classes are predicted (rank: diversity). It lies in [−√(min(B, C)/B), 0): −1 for
    one-hot predictions of B ≤ C distinct classes, −√(C/B) for one-hot predictions spread evenly
    over the C classes when B > C.
    """
    predictions = F.softmax(logits.float(), dim=1)
    return -torch.linalg.svdvals(predictions).sum() / len(logits)


def batch_spectral_penalty(source_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """BSP with k = 1 (the paper's choice):

        L_bsp = σ_1(F_s)² + σ_1(F_t)²

    σ_1 the largest singular value of each B×d feature matrix. Penalising the top singular direction,
    which adversarial alignment lets dominate (transferability at the cost of discriminability), gives
    the other eigen-features more weight. Equal to ‖F‖²_F for a rank-one batch.
    """
    source_top = torch.linalg.svdvals(source_features.float())[0]
    target_top = torch.linalg.svdvals(target_features.float())[0]
    return source_top ** 2 + target_top ** 2


class BatchNuclearNormLoss(nn.Module):
    """`batch_nuclear_norm_loss` of the target logits as a transfer loss: `forward(f_s, f_t, z_s, z_t)`
    returns (L_bnm(z_t), {}). It has no chance value."""

    chance = None

    def forward(self, source_features: torch.Tensor, target_features: torch.Tensor,
                source_logits: torch.Tensor, target_logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return batch_nuclear_norm_loss(target_logits), {}


class BatchSpectralPenaltyLoss(nn.Module):
    """`batch_spectral_penalty` of the source and target features as a transfer loss (added to DANN or
    CDAN): `forward(f_s, f_t, z_s, z_t)` returns (L_bsp, {}). It has no chance value."""

    chance = None

    def forward(self, source_features: torch.Tensor, target_features: torch.Tensor,
                source_logits: torch.Tensor | None = None, target_logits: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict]:
        return batch_spectral_penalty(source_features, target_features), {}
