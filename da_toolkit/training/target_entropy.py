"""Entropy minimisation on the target predictions as a transfer term (Grandvalet & Bengio, "Semi-supervised
Learning by Entropy Minimization", NIPS 2004): the optional term of AFN's (Xu et al. 2019) and MCD's
digit runs in Transfer-Learning-Library (`--trade-off-entropy 0.03`). Pure tensor maths."""
from __future__ import annotations

import torch
from torch import nn

from da_toolkit.training.virtual_adversarial import conditional_entropy


class TargetEntropyLoss(nn.Module):
    """The mean entropy of the target predictions, p_i = softmax(z_i^t):

        L_ent = −mean_i Σ_c p_ic log p_ic     (`conditional_entropy`)

    0 when every target prediction is one-hot, ln C when every one is uniform over C classes; minimising
    it moves the decision boundaries away from dense regions of target data. `forward(f_s, f_t, z_s, z_t)`
    returns (L_ent, {}); it has no chance value.
    """

    chance = None

    def forward(self, source_features: torch.Tensor, target_features: torch.Tensor,
                source_logits: torch.Tensor, target_logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return conditional_entropy(target_logits), {}
