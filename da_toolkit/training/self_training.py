"""Self-training losses: pseudo-labels and consistency on target predictions, and the EMA teacher.

* FixMatch (Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
  Confidence", NeurIPS 2020): `confident_pseudo_label_loss`.
* Self-ensembling (French, Mackiewicz & Fisher, "Self-ensembling for visual domain adaptation",
  ICLR 2018), a mean teacher (Tarvainen & Valpola 2017) for domain adaptation:
  `confident_consistency_loss`, `class_balance_loss`, `ema_update`.

Pure tensor maths on logits; the adapters (adapters/fixmatch.py, adapters/mean_teacher.py) make
the views and weigh the terms.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def confident_pseudo_label_loss(strong_logits: torch.Tensor, weak_logits: torch.Tensor,
                                threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch's unlabeled loss of a target batch seen twice, weakly (z_w) and strongly (z_s):

        p_i = softmax(z_w,i)        (no gradient)
        ŷ_i = argmax_c p_ic,  m_i = [max_c p_ic ≥ τ]
        L_u = (1/B) Σ_i m_i · CE(z_s,i, ŷ_i)

    averaged over the whole batch B (not over the confident images only), as in the paper.
    Returns (L_u, mask rate (1/B) Σ_i m_i).
    """
    with torch.no_grad():
        confidence, pseudo_labels = F.softmax(weak_logits.float(), dim=1).max(dim=1)
        mask = (confidence >= threshold).float()
    loss = (F.cross_entropy(strong_logits.float(), pseudo_labels, reduction="none") * mask).mean()
    return loss, mask.mean()


def confident_consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                               threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-ensembling's consistency of the student's and the teacher's predictions of two
    augmented views of a target batch, with confidence thresholding:

        p_i = softmax(z_student,i),  q_i = softmax(z_teacher,i)   (q: no gradient)
        m_i = [max_c q_ic ≥ τ]
        L_con = (1/B) Σ_i m_i · (1/C) Σ_c (p_ic − q_ic)²

    (the squared difference averaged over the C classes, as in the authors' code). Returns
    (L_con, mask rate (1/B) Σ_i m_i).
    """
    student = F.softmax(student_logits.float(), dim=1)
    with torch.no_grad():
        teacher = F.softmax(teacher_logits.float(), dim=1)
        mask = (teacher.max(dim=1).values >= threshold).float()
    loss = (((student - teacher) ** 2).mean(dim=1) * mask).mean()
    return loss, mask.mean()


def class_balance_loss(logits: torch.Tensor) -> torch.Tensor:
    """Self-ensembling's class-balance term: the binary cross-entropy between the batch-mean
    prediction p̄ and the uniform distribution, summed over the C classes:

        p̄_c = (1/B) Σ_i softmax(z_i)_c
        L_bal = − Σ_c [ (1/C) log p̄_c + (1 − 1/C) log(1 − p̄_c) ]

    (the authors' mean over classes times C). It is smallest when the batch predicts every class
    equally often, so that a threshold on confidence cannot make the network predict one class.
    Written out in float32, with the logarithms clamped at −100 as torch's BCE does: CUDA's autocast
    refuses F.binary_cross_entropy (on probabilities) inside a mixed-precision step.
    """
    mean = F.softmax(logits.float(), dim=1).mean(dim=0)
    uniform = 1 / mean.numel()
    return -(uniform * mean.log().clamp(min=-100) + (1 - uniform) * (-mean).log1p().clamp(min=-100)).sum()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """The mean teacher's weights: θ'_t = α θ'_{t−1} + (1 − α) θ_t for every parameter (α: `decay`).
    Buffers (batch-norm statistics) are the teacher's own, from its forward passes."""
    for teacher_parameter, student_parameter in zip(teacher.parameters(), student.parameters()):
        teacher_parameter.mul_(decay).add_(student_parameter.detach(), alpha=1 - decay)
