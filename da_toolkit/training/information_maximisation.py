"""SHOT's two target objectives (Liang et al., "Do We Really Need to Access the Source Data? Source
Hypothesis Transfer for Unsupervised Domain Adaptation", ICML 2020): information maximisation of the
target predictions, and self-supervised pseudo-labels from a weighted clustering of target features.
Pure tensor maths; the adapter (adapters/shot.py) decides when each is computed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPSILON = 1e-5  # inside the logarithms, as in the authors' code: log(p + ε)


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """H(p) = −Σ_k p_k log(p_k + ε) along the last dimension."""
    return -(probabilities * torch.log(probabilities + EPSILON)).sum(dim=-1)


def information_maximisation(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SHOT's L_im (paper eq. 3, written with entropies) of a batch of target logits Z (B×C):

        p_i = softmax(z_i)
        L_ent = (1/B) Σ_i H(p_i)          each prediction confident (individual certainty)
        L_div = H(p̄),  p̄ = (1/B) Σ_i p_i  the batch's predictions spread over the classes (diversity)
        L_im = L_ent − L_div

    L_im lies in [−log C, 0] (H is concave: the entropy of the mean is at least the mean entropy):
    −log C for confident predictions spread evenly over the C classes, 0 for uniform predictions
    and 0 for every sample confidently in one and the same class. Returns
    (L_im, L_ent, L_div); the terms are returned for logging (no gradient is cut).
    """
    probabilities = F.softmax(logits.float(), dim=1)
    individual = entropy(probabilities).mean()
    diversity = entropy(probabilities.mean(dim=0))
    return individual - diversity, individual, diversity


@torch.no_grad()
def cluster_pseudo_labels(features: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """SHOT's self-supervised pseudo-labels (paper eqs. 4-5) of N target samples: features F (N×d) and
    the model's predictions P (N×C) → labels (N), in the classes the model predicts for some sample.

        f̃_i = [f_i, 1] / ‖[f_i, 1]‖                    cosine geometry (the authors' code appends the 1)
        c_k = Σ_i p_ik f̃_i / Σ_i p_ik                  centroids weighted by the predictions
        ŷ_i = argmin_{k ∈ K} D_cos(f̃_i, c_k)           nearest centroid, K = {k : k = argmax p_i for some i}
        c_k = Σ_i [ŷ_i = k] f̃_i / Σ_i [ŷ_i = k]         one refinement round with the hard labels
        ŷ_i = argmin_{k ∈ K} D_cos(f̃_i, c_k)

    D_cos(a, b) = 1 − a·b / (‖a‖‖b‖). A class no sample is predicted as gets no centroid (the
    authors' `threshold` 0), so a pseudo-label is never a class the model has abandoned.
    """
    features = F.normalize(torch.cat([features.float(), features.new_ones(len(features), 1)], dim=1), dim=1)
    probabilities = probabilities.float()
    kept = torch.unique(probabilities.argmax(dim=1))  # K, sorted

    def nearest_centroid(weights: torch.Tensor) -> torch.Tensor:
        centroids = weights.t() @ features / (weights.sum(dim=0)[:, None] + 1e-8)
        similarity = features @ F.normalize(centroids[kept], dim=1).t()  # 1 − D_cos
        return kept[similarity.argmax(dim=1)]

    labels = nearest_centroid(probabilities)
    return nearest_centroid(F.one_hot(labels, probabilities.shape[1]).float())
