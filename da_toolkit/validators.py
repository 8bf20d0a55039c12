"""Validators: scores of a trained model computed without target test labels, higher is better.

Each is pure tensor maths on a model's outputs for a fixed sample of images the user has: the
labeled source validation split, unlabeled target training images, and (only when the recipe
holds some of its k labeled target images out of training, `selection.target_label_folds`) held-out
labeled target images. `selection.py` computes them during training to choose a checkpoint;
`benchmark/recommend.py` compares them with target accuracy to recommend a method.

Scores that are naturally "lower is better" (an entropy, a risk) are negated, so every
validator is maximised. H(p) = −Σ_c p_c log p_c is the entropy in nats; p_i = softmax(z_i).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# name -> one line for tables and `--help`: what it reads and where it comes from
VALIDATORS = {
    "source_accuracy": "accuracy on the labeled source validation images",
    "entropy": "−mean prediction entropy on target images (Morerio et al. 2018)",
    "info_max": "information maximisation H(mean p) − mean H(p) on target images (Gomes et al. 2010; SHOT)",
    "dev": "−deep embedded validation risk (You et al. 2019): importance-weighted source validation loss",
    "snd": "soft neighbourhood density of target predictions (Saito et al. 2021)",
    "target_label_accuracy": "accuracy on held-out labeled target images (cross-fitted folds; scarce labels only)",
}
SOURCE_ONLY_VALIDATORS = ("source_accuracy", "dev")  # the others read target images


def _entropies(logits: torch.Tensor) -> torch.Tensor:
    """H(p_i) of every row's softmax, in nats."""
    log_p = F.log_softmax(logits.double(), dim=1)
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, 0.0).sum(1)  # 0 · log 0 = 0 (a masked-out entry)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """mean_i [argmax_c z_ic = y_i]: source validation accuracy, or held-out labeled target accuracy."""
    if len(labels) == 0:
        return float("nan")
    return float((logits.argmax(1) == labels).double().mean())


def negative_entropy(logits: torch.Tensor) -> float:
    """−(1/N) Σ_i H(p_i): confident target predictions score high (Morerio, Cavazza & Murino,
    "Minimal-entropy correlation alignment", ICLR 2018, use it to validate). A model that puts every
    target image in one class with certainty scores the maximum, 0: read it beside a diversity check."""
    return float(-_entropies(logits).mean())


def information_maximization(logits: torch.Tensor) -> float:
    """IM = H(p̄) − (1/N) Σ_i H(p_i), p̄ = (1/N) Σ_i p_i: confident (second term) and diverse (first
    term) target predictions; the mutual information between image and predicted class (Gomes, Krause &
    Perona, NeurIPS 2010; the objective of SHOT, Liang et al., ICML 2020; one of the validators compared by
    Musgrave, Belongie & Lim, 2022). Range [0, log C]; a collapsed model (one class) scores near 0."""
    p_mean = F.softmax(logits.double(), dim=1).mean(0)
    diversity = float(-(p_mean * p_mean.clamp_min(1e-300).log()).sum())
    return diversity - float(_entropies(logits).mean())


def soft_neighbourhood_density(logits: torch.Tensor, temperature: float = 0.05) -> float:
    """SND (Saito et al., "Tune it the right way", ICCV 2021): with p̂_i = p_i / ‖p_i‖₂,
    S_ij = p̂_i · p̂_j for j ≠ i, P_ij = exp(S_ij / τ) / Σ_{k≠i} exp(S_ik / τ), SND = (1/N) Σ_i H(P_i), τ = 0.05.
    High when each target prediction has many close neighbours (dense, well clustered predictions).
    A model that predicts the same distribution for every image also scores high (every neighbour is
    equally close): SND needs a trained model, it does not see collapse."""
    p = F.normalize(F.softmax(logits.double(), dim=1), dim=1)
    similarity = p @ p.T / temperature
    similarity.fill_diagonal_(-math.inf)
    return float(_entropies(similarity).mean())


def importance_weights(fit_source: np.ndarray, fit_target: np.ndarray, weigh: np.ndarray, seed: int = 0) -> np.ndarray:
    """Density ratios w(x) = p_T(x) / p_S(x) of the feature vectors `weigh` (source validation images),
    from a logistic-regression domain classifier d(x) = P(target | x) fitted on `fit_source` (label 0) and
    `fit_target` (label 1): w = (n_S / n_T) · d / (1 − d), d clipped to [1e-3, 1 − 1e-3]. Features are
    standardised on the fitting set. (DEV trains its discriminator on features, as here; You et al. 2019.)"""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.concatenate([fit_source, fit_target]).astype(np.float64)
    domain = np.concatenate([np.zeros(len(fit_source)), np.ones(len(fit_target))])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=200, random_state=seed))
    model.fit(features, domain)
    d = np.clip(model.predict_proba(weigh.astype(np.float64))[:, 1], 1e-3, 1 - 1e-3)
    return (len(fit_source) / len(fit_target)) * d / (1 - d)


def deep_embedded_validation(losses: torch.Tensor, weights: torch.Tensor) -> float:
    """−DEV risk (You, Wang, Chen, Long & Jordan, "Towards accurate model selection in deep unsupervised
    domain adaptation", ICML 2019). With ℓ_i the cross-entropy of source validation image i and w_i its
    density ratio p_T / p_S (`importance_weights`): L_i = w_i ℓ_i, the control variate
    η = −Ĉov(L, w) / V̂ar(w), and R_DEV = mean(L) + η · mean(w) − η, an estimate of the target risk with
    lower variance than mean(L) (E[w] = 1). Returns −R_DEV (higher is better); with constant weights
    (Var(w) = 0) η = 0 and R_DEV = mean(L)."""
    losses, weights = losses.double(), weights.double()
    weighted = weights * losses
    variance = weights.var(unbiased=True) if len(weights) > 1 else torch.tensor(0.0, dtype=torch.float64)
    if variance <= 1e-12:
        eta = torch.tensor(0.0, dtype=torch.float64)
    else:
        covariance = ((weighted - weighted.mean()) * (weights - weights.mean())).sum() / (len(weights) - 1)
        eta = -covariance / variance
    return float(-(weighted.mean() + eta * weights.mean() - eta))
