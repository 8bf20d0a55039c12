"""CycleGAN's losses (Zhu et al., 2017) and CyCADA's semantic-consistency loss (Hoffman et al., 2018).

Notation: G: A -> B and F: B -> A are the generators, D_A and D_B the discriminators of domains
A (source) and B (target), ‖·‖₁ the mean absolute difference over all pixels.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


class GANLoss(nn.Module):
    """Adversarial loss of a discriminator's logit map against an all-real or all-fake target.

    ``lsgan`` (least squares, CycleGAN's default):  L = mean((D(x) − t)²)
    ``vanilla`` (the original GAN's log loss):       L = −mean(t·log σ(D(x)) + (1 − t)·log(1 − σ(D(x))))
    with t = 1 for real and t = 0 for fake. The generator minimises L(D(fake), real); the
    discriminator minimises L(D(real), real) and L(D(fake), fake).
    """

    def __init__(self, mode: Literal["lsgan", "vanilla"] = "lsgan"):
        super().__init__()
        if mode not in ("lsgan", "vanilla"):
            raise ValueError(f"GAN loss mode must be lsgan or vanilla, got {mode!r}")
        self.mode = mode

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        prediction = prediction.float()
        target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
        if self.mode == "lsgan":
            return F.mse_loss(prediction, target)
        return F.binary_cross_entropy_with_logits(prediction, target)


def cycle_consistency_loss(reconstructed: torch.Tensor, real: torch.Tensor, weight: float) -> torch.Tensor:
    """λ ‖F(G(a)) − a‖₁ for domain A with λ = λ_A (likewise λ_B ‖G(F(b)) − b‖₁ for B)."""
    return weight * F.l1_loss(reconstructed.float(), real.float())


def identity_loss(mapped: torch.Tensor, real: torch.Tensor, cycle_weight: float,
                  identity_weight: float) -> torch.Tensor:
    """λ_idt · λ_B ‖G(b) − b‖₁ (a generator fed an image of its output domain should leave it alone).

    As in the reference implementation, the identity weight λ_idt scales the cycle weight of the
    domain of `real`: λ_idt·λ_B for G(b), λ_idt·λ_A for F(a).
    """
    return identity_weight * cycle_weight * F.l1_loss(mapped.float(), real.float())


def semantic_consistency_loss(classifier: nn.Module, fake_b: torch.Tensor, labels_a: torch.Tensor,
                              fake_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
    """CyCADA's semantic consistency with a frozen source classifier f_S:

        L_sem = CE(f_S(G(a)), t_a) + CE(f_S(F(b)), argmax f_S(b))

    (CE averaged over the batch.) Translation must keep the class: the translated source image keeps
    t_a, and the translated target image keeps the class f_S predicts for the original. `labels_a`
    is t_a: CyCADA's argmax f_S(a) (the adapter's default, pixel.semantic_targets=predicted) or
    the true source labels y_a (semantic_targets=labels). No target label is read.
    """
    with torch.no_grad():
        pseudo_labels_b = classifier(real_b).argmax(1)
    return (F.cross_entropy(classifier(fake_b).float(), labels_a)
            + F.cross_entropy(classifier(fake_a).float(), pseudo_labels_b))
