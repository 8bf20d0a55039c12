"""Feature-level adversarial losses of DANN (Ganin et al. 2016) and ADDA (Tzeng et al. 2017).

CDAN's conditional variant is in `conditional_adversarial.py`, MCC in `class_confusion.py`.

Notation: f_s, f_t are features of a source and a target batch, d = discriminator logits,
D = σ(d) the probability the discriminator gives to "source". Every loss here is a plain
function or module of tensors; none knows the training loop.
"""
from __future__ import annotations

import math

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


def domain_bce(source_logits: torch.Tensor, target_logits: torch.Tensor, source_weight: torch.Tensor | None = None,
               target_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's binary cross-entropy averaged over both domains (source labeled 1, target 0)
    and its accuracy:

        L = ½ ( mean_s w_s · (−log D(f_s)) + mean_t w_t · (−log(1 − D(f_t))) )

    with per-sample weights w (1 when omitted). With equal batch sizes this is the mean over the
    concatenated batch: DANN's domain loss as in the paper's implementation and
    Transfer-Learning-Library. Its chance value (D ≡ ½, w ≡ 1) is ln 2. The accuracy is the
    fraction of both batches on the right side of D = ½ (chance: ½).
    """
    source_logits, target_logits = source_logits.float(), target_logits.float()
    source_terms = F.binary_cross_entropy_with_logits(source_logits, torch.ones_like(source_logits), reduction="none")
    target_terms = F.binary_cross_entropy_with_logits(target_logits, torch.zeros_like(target_logits), reduction="none")
    if source_weight is not None:
        source_terms = source_terms * source_weight
    if target_weight is not None:
        target_terms = target_terms * target_weight
    loss = 0.5 * (source_terms.mean() + target_terms.mean())
    correct = torch.cat([source_logits > 0, target_logits <= 0])
    return loss, correct.float().mean().detach()


def domain_classification_loss(source_logits: torch.Tensor, target_logits: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """ADDA's discriminator loss, the sum of the two domains' terms (= 2 · `domain_bce`), and its accuracy:

        L_advD = −E[log D(M_s(x_s))] − E[log(1 − D(M_t(x_t)))]
    """
    loss, accuracy = domain_bce(source_logits, target_logits)
    return 2 * loss, accuracy


def inverted_label_loss(target_logits: torch.Tensor) -> torch.Tensor:
    """ADDA's mapping loss for the target encoder M_t (the GAN loss with inverted labels):

        L_advM = −E[log D(M_t(x_t))]

    i.e. target features are scored against the "source" label; the discriminator is not updated by it.
    """
    target_logits = target_logits.float()
    return F.binary_cross_entropy_with_logits(target_logits, torch.ones_like(target_logits))


def logit_scale(logits: torch.Tensor) -> torch.Tensor:
    """mean |d|: how confident the discriminator is (0 at chance; ≫ 1 when saturated)."""
    return logits.detach().float().abs().mean()


class DomainAdversarialLoss(nn.Module):
    """DANN's domain-adversarial loss on features, through the gradient reversal layer:

        L_d = ½ ( mean_s −log D(R_λ(f_s)) + mean_t −log(1 − D(R_λ(f_t))) )      (`domain_bce`)

    Minimising L_d trains the discriminator D to tell the domains apart while, through R_λ
    (identity forward, −λ·grad backward), the feature extractor receives −λ ∂L_d/∂f and so
    learns features D cannot separate: the minimax of DANN in a single backward pass.
    Source and target features go through D as one batch (its batch norm sees both domains).
    Chance value (D ≡ ½): ln 2. Set `grl.coefficient` to schedule λ.

    `forward(f_s, f_t, z_s, z_t)` (the class logits z are not used) returns L_d and the scalars
    ``domain/accuracy`` and ``domain/logit_scale`` (mean |d|).
    """

    chance = math.log(2)

    def __init__(self, discriminator: nn.Module, grl: GradientReversal | None = None):
        super().__init__()
        self.discriminator = discriminator
        self.grl = grl if grl is not None else GradientReversal()

    def forward(self, source_features: torch.Tensor, target_features: torch.Tensor,
                source_logits: torch.Tensor | None = None, target_logits: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.discriminator(self.grl(torch.cat([source_features, target_features])))
        source_d, target_d = logits.split([len(source_features), len(target_features)])
        loss, accuracy = domain_bce(source_d, target_d)
        return loss, {"domain/accuracy": accuracy, "domain/logit_scale": logit_scale(logits)}
