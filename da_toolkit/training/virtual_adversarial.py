"""The losses of VADA and DIRT-T (Shu, Bui, Narui & Ermon, "A DIRT-T Approach to Unsupervised Domain
Adaptation", ICLR 2018): conditional entropy, virtual adversarial training (Miyato et al., "Virtual
Adversarial Training", TPAMI 2018) and the KL divergence to a teacher's predictions.

Notation: z = class logits of a batch, p = softmax(z); every quantity is a mean over the batch.
These are plain functions of tensors (VAT also of the model it perturbs); none knows the training loop.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in float32 when it is in a lower precision (bf16, fp16 under autocast), else as it is."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def conditional_entropy(logits: torch.Tensor) -> torch.Tensor:
    """The conditional entropy of the predictions, VADA's L_c (the paper's eq. 6 on target logits):

        H(p) = −mean_i Σ_c p_ic log p_ic

    0 when every prediction is one-hot, ln C when every prediction is uniform over C classes.
    Minimising it pushes the decision boundaries away from dense regions of (target) data (the
    cluster assumption).
    """
    log_p = F.log_softmax(at_least_float32(logits), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def softmax_kl(reference_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(p_ref || p) with p_ref = softmax(reference_logits) held constant (no gradient):

        KL = mean_i Σ_c p_ref,ic (log p_ref,ic − log p_ic)

    VAT's divergence (p_ref: the clean prediction, p: the perturbed one) and DIRT-T's teacher term
    β · KL(h_teacher(x) || h_θ(x)) (the paper's eq. 8; p_ref: the teacher's prediction). Its gradient
    in `logits` is p − p_ref, that of the authors' cross-entropy with the teacher's soft labels.
    """
    reference = F.log_softmax(at_least_float32(reference_logits.detach()), dim=1)
    log_p = F.log_softmax(at_least_float32(logits), dim=1)
    return (reference.exp() * (reference - log_p)).sum(dim=1).mean()


def unit_directions(tensor: torch.Tensor) -> torch.Tensor:
    """Each sample of `tensor` (the first dimension) scaled to L2 norm 1, whatever its size (it is first
    divided by its largest |entry|, as Miyato et al.'s code does, so that a gradient of 1e-20 is not
    lost to underflow); a zero sample stays zero."""
    shape = (-1, *([1] * (tensor.dim() - 1)))
    tensor = tensor / tensor.flatten(1).abs().amax(dim=1).clamp_min(torch.finfo(tensor.dtype).tiny).view(shape)
    return tensor / tensor.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)


def adversarial_direction(model: nn.Module, images: torch.Tensor, xi: float = 1e-6) -> torch.Tensor:
    """VAT's adversarial direction, one power iteration (Miyato et al., eq. 11-13): per sample

        d ~ N(0, I) / ‖·‖,   g = ∇_d KL(p(x) || p(x + ξ d)),   r̂ = g / ‖g‖

    (g ≈ ξ² H d for the Hessian H of the KL at d = 0: one power-iteration step towards H's top
    eigenvector, the direction in which the prediction changes fastest). The model is evaluated in
    eval mode here, so that neither dropout masks nor batch statistics, which differ from one forward
    pass to the next, swamp the ξ-sized difference (its modes are restored), and with autocast off
    (in bf16, x + ξd would round to x and r̂ would be 0 or noise). d comes from torch's
    global RNG on `images`' device, whose state every checkpoint holds (training/loop.py). Returns r̂,
    detached; a sample on which the model is locally constant gets r̂ = 0.
    """
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.autocast(images.device.type, enabled=False):
            with torch.no_grad():
                clean_logits = model(images)
            direction = unit_directions(torch.randn(images.shape, device=images.device, dtype=images.dtype))
            direction.requires_grad_(True)
            divergence = softmax_kl(clean_logits, model(images.detach() + xi * direction))
            gradient, = torch.autograd.grad(divergence, direction)
    finally:
        for module, training in modes.items():
            module.train(training)
    return unit_directions(gradient.detach())


def virtual_adversarial_loss(model: nn.Module, images: torch.Tensor, logits: torch.Tensor, radius: float,
                             xi: float = 1e-6, direction_model: nn.Module | None = None) -> torch.Tensor:
    """VAT's local distributional smoothness loss, VADA's L_v (the paper's eq. 7):

        L_v = mean_i KL(p(x_i) || p(x_i + ε r̂_i)),   r̂ = `adversarial_direction`, ‖ε r̂_i‖ = ε = radius

    p(x) = softmax(`logits`), the model's predictions on `images`, is held constant (no gradient), as
    in the authors' code; the perturbed prediction goes through `model` as it is (train mode), and
    the loss trains the model to be smooth (Lipschitz) in the ε-ball around each image.
    `direction_model`: the network r̂ is sought on when `model` is a data-parallel wrapper of it
    (training/distributed.py: the wrapper's forward arms its gradient reducer, which the power
    iteration's gradient in the input must not); `model` itself by default.
    """
    direction_model = model if direction_model is None else direction_model
    perturbation = radius * adversarial_direction(direction_model, images, xi)
    return softmax_kl(logits, model(images.detach() + perturbation))
