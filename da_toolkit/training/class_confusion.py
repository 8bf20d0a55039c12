"""MCC: minimum class confusion (Jin et al., "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from da_toolkit.training.conditional_adversarial import entropy_weights


def minimum_class_confusion(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """The MCC loss of a batch of (target) class logits Z (B×C):

        Ŷ = softmax(Z / T)                                  temperature-scaled predictions
        w_i = B · (1 + exp(−H(Ŷ_i))) / Σ_j (1 + exp(−H(Ŷ_j)))  entropy weights (no gradient)
        C = Ŷᵀ diag(w) Ŷ                                     class correlation (C×C, symmetric)
        C̃_jk = C_jk / Σ_k' C_jk'                              each row normalised to sum 1
        L_mcc = (Σ_j Σ_k C̃_jk − Σ_j C̃_jj) / C = (1/C) Σ_{j≠k} C̃_jk

    (C is symmetric, so normalising rows gives the same loss as normalising columns.) It lies in
    [0, (C−1)/C] and is 0 when no sample spreads its prediction over two classes; minimising it
    makes target predictions confident, the row normalisation weighting rare classes as much as
    frequent ones.
    """
    batch, classes = logits.shape
    predictions = F.softmax(logits.float() / temperature, dim=1)
    weights = entropy_weights(predictions.detach()).unsqueeze(1)  # mean 1, i.e. B·w/Σw
    correlation = (predictions * weights).t() @ predictions
    correlation = correlation / correlation.sum(dim=1, keepdim=True)
    return (correlation.sum() - correlation.trace()) / classes


class MinimumClassConfusionLoss(nn.Module):
    """`minimum_class_confusion` on the target logits as a transfer loss:
    `forward(f_s, f_t, z_s, z_t)` returns (L_mcc(z_t), {}). It has no chance value."""

    chance = None

    def __init__(self, temperature: float = 2.5):
        super().__init__()
        self.temperature = temperature

    def forward(self, source_features: torch.Tensor, target_features: torch.Tensor,
                source_logits: torch.Tensor, target_logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return minimum_class_confusion(target_logits, self.temperature), {}

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
