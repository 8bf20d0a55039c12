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
import warnings

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
    "bnm": "batch nuclear norm ‖P‖_* / N of target predictions (Cui et al. 2020)",
    "class_ami": "AMI of k-means clusters of target features and the predictions (Musgrave et al. 2022)",
    "target_knn": "mean average precision of source neighbours of target features, by predicted class "
                  "(Musgrave et al. 2022)",
    "target_label_accuracy": "accuracy on held-out labeled target images (cross-fitted folds; scarce labels only)",
}
READS_SOURCE = ("source_accuracy", "dev", "target_knn")  # the validators that read labeled source images
TARGET_KNN_K = 1000  # Musgrave et al.'s k, capped at the number of source images

# The ensemble ranks a set of models (`rank_ensemble`): not a score of one model, so not a `selection.select`
# choice; `benchmark/recommend.py` evaluates it beside the validators. Its members read four different kinds
# of evidence, so that no single failure mode fools all of them: the labeled source images (source_accuracy:
# a method that destroys what it learnt from its labels), the target predictions' confidence and diversity
# (info_max), the agreement of the target predictions with the target features' own clusters (class_ami), and
# whether target images sit near source images of the class predicted for them (target_knn: reads source
# labels and target images together). A method that sharpens its target predictions without being right
# gains on info_max alone; bnm and entropy read the same evidence as info_max, dev is high-variance
# (Musgrave et al. 2022), snd does not see collapse: left out.
ENSEMBLE = "ensemble"
ENSEMBLE_MEMBERS = ("source_accuracy", "info_max", "class_ami", "target_knn")
ENSEMBLE_DESCRIPTION = ("mean rank, among the models compared, over " + ", ".join(ENSEMBLE_MEMBERS)
                        + " (rank aggregation; compares models, not a score of one)")


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


def batch_nuclear_norm(logits: torch.Tensor) -> float:
    """BNM = ‖P‖_* / N, the nuclear norm (sum of singular values) of the N × C matrix P of target
    predictions p_i = softmax(z_i), over N (Cui, Wang, Zhuo, Li, Huang & Tian, "Towards discriminability and
    diversity: batch nuclear-norm maximization under label insufficient situations", CVPR 2020, maximise it
    in training; Musgrave, Belongie & Lim 2022 validate with it). ‖P‖_* grows with confident (each row's
    norm) and diverse (the rank of P) predictions: N confident rows spread evenly over C ≤ N classes score
    √(N / C) · C / N = √(C / N), all in one class √N / N = 1/√N. The same value as pytorch-adapt's
    BNMValidator (the negated BNMLoss, torch.linalg.norm(softmax(z), "nuc") / N)."""
    if len(logits) == 0:
        return float("nan")
    p = F.softmax(logits.double(), dim=1)
    return float(torch.linalg.matrix_norm(p, ord="nuc") / len(p))


def class_adjusted_mutual_information(features: torch.Tensor, logits: torch.Tensor, seed: int = 0) -> float:
    """ClassAMI (Musgrave, Belongie & Lim, "Benchmarking validation methods for unsupervised domain adaptation",
    2022): AMI(argmax_c z_ic, k-means clusters of f̂_i), with f̂_i = f_i / ‖f_i‖₂ the L2-normalised target
    features, k = C clusters (scikit-learn KMeans, k-means++ initialisation, one start, random_state = seed:
    deterministic) and AMI the adjusted mutual information (Vinh, Epps & Bailey 2010; scikit-learn
    adjusted_mutual_info_score, arithmetic mean): 1 when the feature clusters are the predicted classes,
    about 0 when they are unrelated. High when the classifier's decisions follow the structure of the target
    features. A model that predicts one class for every image scores 0 (it tells the images apart by
    nothing; scikit-learn would give 1 when the features form one cluster too). With a normaliser
    F.normalize and the same random state, the value of pytorch-adapt's ClassClusterValidator as Musgrave et
    al. configure it (layer features, normalize True, target only)."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import adjusted_mutual_info_score

    classes = logits.shape[1]
    predictions = logits.argmax(1).numpy()
    if len(logits) < classes:
        return float("nan")
    if len(np.unique(predictions)) < 2:
        return 0.0
    points = F.normalize(features.float(), dim=1).numpy()
    with warnings.catch_warnings():  # fewer distinct points than clusters (a collapsed feature map): fine
        warnings.simplefilter("ignore", ConvergenceWarning)
        clusters = KMeans(n_clusters=classes, n_init=1, random_state=seed).fit_predict(points)
    return float(adjusted_mutual_info_score(predictions, clusters))


def target_knn_precision(target_features: torch.Tensor, target_logits: torch.Tensor, source_features: torch.Tensor,
                         source_labels: torch.Tensor, k: int = TARGET_KNN_K) -> float:
    """TargetKNN (Musgrave, Belongie & Lim 2022; pytorch-adapt's TargetKNNValidator, mean average precision):
    do the labeled source images nearest a target image have the class the model predicts for it? With
    ŷ_i = argmax_c z_ic, the k' = min(k, N_S) source images nearest target image i (Euclidean distance of
    L2-normalised features), ordered, y_(1) … y_(k') their labels, and m_i = Σ_r [y_(r) = ŷ_i]:
    AP_i = (1 / max(m_i, 1)) Σ_r [y_(r) = ŷ_i] · (Σ_{s ≤ r} [y_(s) = ŷ_i]) / r. The score is the mean over the
    predicted classes c of the mean AP_i of the images predicted c (a class with no source image in the
    sample is left out). It reads source labels and target predictions: a model that gives target images
    confident but wrong classes, far from the source images of those classes, scores low however confident."""
    predictions = target_logits.argmax(1)
    keep = torch.isin(predictions, source_labels)  # a predicted class with source images in the sample
    if not keep.any():
        return float("nan")
    query, predictions = F.normalize(target_features[keep].double(), dim=1), predictions[keep]
    reference = F.normalize(source_features.double(), dim=1)
    nearest = torch.cdist(query, reference).topk(min(k, len(reference)), dim=1, largest=False).indices
    match = (source_labels[nearest] == predictions[:, None]).double()
    precision_at_r = match.cumsum(1) / torch.arange(1, match.shape[1] + 1, dtype=torch.float64)
    average_precision = (precision_at_r * match).sum(1) / match.sum(1).clamp_min(1)
    return float(torch.stack([average_precision[predictions == c].mean() for c in predictions.unique()]).mean())


def rank_ensemble(scores: list[dict[str, float]], members: tuple[str, ...] = ENSEMBLE_MEMBERS) -> list[float]:
    """Rank aggregation of validators over a set of M models (`scores`: each model's {validator: score}):
    every member validator ranks the models from 1 (its lowest score) to M (its highest; tied models share
    the mean of their ranks), and a model's ensemble score is its mean rank over the members, higher is
    better (Borda count). It is relative to the models compared: adding a model can change the others'
    scores. A member some model lacks (absent or NaN) is left out, so that every model is ranked on the same
    validators; with no member left every score is NaN."""
    from scipy.stats import rankdata

    usable = [name for name in members
              if scores and all(s.get(name) is not None and not math.isnan(s[name]) for s in scores)]
    if not usable:
        return [float("nan")] * len(scores)
    ranks = np.stack([rankdata([s[name] for s in scores], method="average") for name in usable])
    return [float(r) for r in ranks.mean(0)]
