"""MDD: margin disparity discrepancy (Zhang et al., "Bridging Theory and Algorithm for Domain Adaptation", ICML 2019)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from da_toolkit.training.domain_losses import GradientReversal

SHIFT = 1e-6  # log(1 − p + SHIFT), capped at log 1: the target term stays finite when the adversary is sure


def margin_disparity_loss(source_logits: torch.Tensor, source_adversary_logits: torch.Tensor,
                          target_logits: torch.Tensor, target_adversary_logits: torch.Tensor,
                          margin: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss L = −D_γ that MDD's adversary h' minimises (and the features, through R_λ, maximise),
    with its two disparities:

        ŷ = argmax z                           the main head's predictions (no gradient)
        disp_s = mean_s −log softmax(h'(f_s))[ŷ_s]                 (CE of h' against h on source)
        disp_t = mean_t −log(1 − softmax(h'(f_t))[ŷ_t] + 1e-6)     (the paper's "modified" log loss on target)
        D_γ = −γ · disp_s − disp_t ,  L = −D_γ = γ · disp_s + disp_t

    Minimising L makes h' agree with h on source (margin γ) and disagree with it on target, so
    that D_γ = E_t log(1 − σ_{ŷ}(h'(f_t))) + γ E_s log σ_{ŷ}(h'(f_s)) is maximised over h' and,
    through the gradient reversal, minimised over the features. Returns (L, disp_s, disp_t).
    """
    source_predictions = source_logits.detach().argmax(1)
    target_predictions = target_logits.detach().argmax(1)
    source_disparity = F.cross_entropy(source_adversary_logits.float(), source_predictions)
    target_probability = F.softmax(target_adversary_logits.float(), dim=1).gather(1, target_predictions[:, None])
    target_disparity = -torch.log(torch.clamp(1 - target_probability + SHIFT, max=1.0)).mean()
    return margin * source_disparity + target_disparity, source_disparity, target_disparity


class MarginDisparityDiscrepancyLoss(nn.Module):
    """`margin_disparity_loss` as a transfer loss of the joint training: the adversarial head h' (a
    module of this loss) reads the features through the gradient reversal layer R_λ,
    ``forward(f_s, f_t, z_s, z_t)`` returns L(z_s, h'(R_λ f_s), z_t, h'(R_λ f_t)) and the scalars
    ``mdd/source_disparity`` and ``mdd/target_disparity``. The main head gets no gradient from it (ŷ
    is an argmax). It has no chance value. Set `grl.coefficient` to schedule λ.
    """

    chance = None

    def __init__(self, adversary: nn.Module, margin: float = 4.0, grl: GradientReversal | None = None):
        super().__init__()
        self.adversary = adversary
        self.margin = margin
        self.grl = grl if grl is not None else GradientReversal()

    def forward(self, source_features: torch.Tensor, target_features: torch.Tensor,
                source_logits: torch.Tensor, target_logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
        adversary_logits = self.adversary(self.grl(torch.cat([source_features, target_features])))
        source_adversary, target_adversary = adversary_logits.split([len(source_features), len(target_features)])
        loss, source_disparity, target_disparity = margin_disparity_loss(
            source_logits, source_adversary, target_logits, target_adversary, self.margin)
        return loss, {"mdd/source_disparity": source_disparity.detach(),
                      "mdd/target_disparity": target_disparity.detach()}

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
