"""CDAN's conditional domain-adversarial loss (Long et al., "Conditional Adversarial Domain Adaptation", NeurIPS 2018).

Notation as in `domain_losses`: f features, z class logits, g = softmax(z) the class predictions,
d = discriminator logits, D = σ(d).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from da_toolkit.training.domain_losses import GradientReversal, domain_bce, logit_scale


def multilinear_map(features: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """T⊗(f, g) = vec(g fᵀ): the outer product of each sample's class predictions g (N×C) and
    features f (N×F), flattened to N×(C·F); entry [c·F + k] = g_c · f_k."""
    return torch.bmm(predictions.unsqueeze(2), features.unsqueeze(1)).flatten(1)


def entropy(predictions: torch.Tensor) -> torch.Tensor:
    """H(g) = −Σ_c g_c log g_c per row of an N×C probability matrix (0 log 0 = 0)."""
    return -(predictions * torch.log(predictions.clamp_min(1e-12))).sum(1)


def entropy_weights(predictions: torch.Tensor) -> torch.Tensor:
    """CDAN+E's weights w_i = 1 + exp(−H(g_i)), rescaled to mean 1 over the batch (as in the
    reference implementation): confident predictions count more, uncertain ones less."""
    weights = 1 + torch.exp(-entropy(predictions))
    return weights / weights.mean()


class ConditionalDomainAdversarialLoss(nn.Module):
    """CDAN: the domain discriminator sees features conditioned on the class predictions:

        h = T⊗(f, g) = vec(g fᵀ),    g = softmax(z) (detached: the conditioning carries no gradient)
        L_cdan = ½ ( mean_s w_s · (−log D(R_λ(h_s))) + mean_t w_t · (−log(1 − D(R_λ(h_t)))) )

    with w ≡ 1 (CDAN) or, with `entropy_conditioning`, w = 1 + exp(−H(g)) rescaled to mean 1 over
    the concatenated batch (CDAN+E). Like DANN's loss (`DomainAdversarialLoss`) the gradient
    reversal R_λ makes the discriminator descend and the features ascend L_cdan; D takes C·F inputs.
    Chance value (D ≡ ½): ln 2. `forward(f_s, f_t, z_s, z_t)` returns L_cdan and the scalars
    ``domain/accuracy`` and ``domain/logit_scale``.
    """

    chance = math.log(2)

    def __init__(self, discriminator: nn.Module, grl: GradientReversal | None = None,
                 entropy_conditioning: bool = False):
        super().__init__()
        self.discriminator = discriminator
        self.grl = grl if grl is not None else GradientReversal()
        self.entropy_conditioning = entropy_conditioning

    def forward(self, source_features: torch.Tensor, target_features: torch.Tensor,
                source_logits: torch.Tensor, target_logits: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        predictions = F.softmax(torch.cat([source_logits, target_logits]).float(), dim=1).detach()
        features = torch.cat([source_features, target_features])
        logits = self.discriminator(self.grl(multilinear_map(features.float(), predictions)))
        sizes = [len(source_features), len(target_features)]
        source_d, target_d = logits.split(sizes)
        weights = entropy_weights(predictions).split(sizes) if self.entropy_conditioning else (None, None)
        loss, accuracy = domain_bce(source_d, target_d, *weights)
        return loss, {"domain/accuracy": accuracy, "domain/logit_scale": logit_scale(logits)}
