"""StarGAN's losses (Choi et al., "StarGAN: Unified Generative Adversarial Networks for Multi-Domain
Image-to-Image Translation", CVPR 2018, eq. 1-8), as the authors' code computes them.

Notation: G(x, c) translates image x into domain c; D(x) = (D_src(x), D_cls(x)) gives a patch map of
real/fake scores and one logit per domain; c′ is x's own domain.

    L_D = −E[D_src(x)] + E[D_src(G(x, c))] + λ_cls L_cls^r + λ_gp E[(‖∇_x̂ D_src(x̂)‖₂ − 1)²]
    L_G = −E[D_src(G(x, c))] + λ_cls L_cls^f + λ_rec ‖x − G(G(x, c), c′)‖₁

with L_cls^r = CE(D_cls(x), c′), L_cls^f = CE(D_cls(G(x, c)), c) (one label per domain: the
authors' RaFD mode) and x̂ = α x + (1 − α) G(x, c), α ~ U[0, 1] per image (WGAN-GP, Gulrajani et al.,
2017). The reconstruction term is `gan_losses.cycle_consistency_loss(G(G(x, c), c′), x, λ_rec)`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def wasserstein_critic_loss(scores_real: torch.Tensor, scores_fake: torch.Tensor) -> torch.Tensor:
    """The critic's adversarial terms: −mean D_src(x) + mean D_src(G(x, c)) (means over every patch)."""
    return -scores_real.float().mean() + scores_fake.float().mean()


def wasserstein_generator_loss(scores_fake: torch.Tensor) -> torch.Tensor:
    """The generator's adversarial term: −mean D_src(G(x, c))."""
    return -scores_fake.float().mean()


def gradient_penalty(scores: torch.Tensor, interpolates: torch.Tensor, weight: float) -> torch.Tensor:
    """λ_gp · mean over images of (‖∇_x̂ Σ_patches D_src(x̂)‖₂ − 1)², the gradient taken with a graph
    (`interpolates` must require grad and `scores` = D_src(interpolates))."""
    gradients, = torch.autograd.grad(scores.float(), interpolates, torch.ones_like(scores, dtype=torch.float),
                                     create_graph=True)
    norms = gradients.flatten(1).pow(2).sum(1).sqrt()
    return weight * (norms - 1).pow(2).mean()


def interpolate(real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """x̂ = α x + (1 − α) x̃ per image (α: N×1×1×1), detached from both, requiring grad."""
    return (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)


def domain_classification_loss(logits: torch.Tensor, domains: torch.Tensor, weight: float) -> torch.Tensor:
    """λ_cls · CE(D_cls(x), domain) averaged over the batch (real x with c′ for D, G(x, c) with c for G)."""
    return weight * F.cross_entropy(logits.float(), domains)


def semantic_loss(classifier: torch.nn.Module, translated: torch.Tensor, classes: torch.Tensor,
                  weight: float) -> torch.Tensor:
    """CyCADA's semantic consistency for a multi-domain translator, with a frozen source classifier f_S:
    w_sem · CE(f_S(G(x, c)), t) where t is f_S's class of x (`classes`, computed without gradient):
    translating must not change what f_S reads."""
    return weight * F.cross_entropy(classifier(translated).float(), classes)
