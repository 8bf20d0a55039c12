"""MCD's discrepancy between two classifiers (Saito et al., "Maximum Classifier Discrepancy for Unsupervised
Domain Adaptation", CVPR 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def classifier_discrepancy(logits_1: torch.Tensor, logits_2: torch.Tensor) -> torch.Tensor:
    """The mean absolute difference of two heads' class probabilities on a batch (B×C logits each):

        d = (1 / B) Σ_i (1 / C) Σ_k |softmax(z¹_i)_k − softmax(z²_i)_k|

    0 when the heads agree on every sample; at most 2 / C (two one-hot predictions on different classes).
    """
    return (F.softmax(logits_1.float(), dim=1) - F.softmax(logits_2.float(), dim=1)).abs().mean()
