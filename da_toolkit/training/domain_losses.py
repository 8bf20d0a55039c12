"""Feature-level adversarial losses of DANN (Ganin et al. 2016) and ADDA (Tzeng et al. 2017).

Notation: f_s, f_t are features of a source and a target batch, d = discriminator logits,
D = σ(d) the probability the discriminator gives to "source". Every loss here is a plain
function or module of tensors; none knows the training loop.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GradientReverse(torch.autograd.Function):
    """R_λ(x): the identity forward, −λ·grad backward (DANN's gradient reversal layer)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coefficient * grad_output, None


class GradientReversal(nn.Module):
    """The gradient reversal layer as a module; set `coefficient` (λ) as training progresses."""

    def __init__(self, coefficient: float = 1.0):
        super().__init__()
        self.coefficient = coefficient

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return GradientReverse.apply(x, self.coefficient)

    def extra_repr(self) -> str:
        return f"coefficient={self.coefficient}"


def domain_classification_loss(source_logits: torch.Tensor, target_logits: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's binary cross-entropy, source labeled 1 and target 0, and its accuracy:

        L_D = −( mean_s log D(f_s) + mean_t log(1 − D(f_t)) )

    This is DANN's domain loss (eq. 18 of Ganin et al., each domain averaged over its batch) and
    ADDA's discriminator loss L_advD = −E[log D(M_s(x_s))] − E[log(1 − D(M_t(x_t)))].
    The accuracy is the fraction of both batches on the right side of D = 0.5 (chance: 0.5).
    """
    source_logits, target_logits = source_logits.float(), target_logits.float()
    loss = (F.binary_cross_entropy_with_logits(source_logits, torch.ones_like(source_logits))
            + F.binary_cross_entropy_with_logits(target_logits, torch.zeros_like(target_logits)))
    correct = torch.cat([source_logits > 0, target_logits <= 0])
    return loss, correct.float().mean().detach()


def inverted_label_loss(target_logits: torch.Tensor) -> torch.Tensor:
    """ADDA's mapping loss for the target encoder M_t (the GAN loss with inverted labels):

        L_advM = −E[log D(M_t(x_t))]

    i.e. target features are scored against the "source" label; the discriminator is not updated by it.
    """
    target_logits = target_logits.float()
    return F.binary_cross_entropy_with_logits(target_logits, torch.ones_like(target_logits))


class DomainAdversarialLoss(nn.Module):
    """DANN's domain-adversarial loss on features, through the gradient reversal layer:

        L_d = −( mean_s log D(R_λ(f_s)) + mean_t log(1 − D(R_λ(f_t))) )

    Minimising L_d trains the discriminator D to tell the domains apart while, through R_λ
    (identity forward, −λ·grad backward), the feature extractor receives −λ ∂L_d/∂f and so
    learns features D cannot separate: the minimax of DANN in a single backward pass.
    Source and target features go through D as one batch (its batch norm sees both domains).
    `forward` returns (L_d, discriminator accuracy); set `grl.coefficient` to schedule λ.
    """

    def __init__(self, discriminator: nn.Module, grl: GradientReversal | None = None):
        super().__init__()
        self.discriminator = discriminator
        self.grl = grl if grl is not None else GradientReversal()

    def forward(self, source_features: torch.Tensor, target_features: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.discriminator(self.grl(torch.cat([source_features, target_features])))
        source_logits, target_logits = logits.split([len(source_features), len(target_features)])
        return domain_classification_loss(source_logits, target_logits)
