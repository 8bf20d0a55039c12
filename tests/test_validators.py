"""Validators: every score checked against arithmetic done by hand on 2-4 images and 2-3 classes."""
from __future__ import annotations

import dataclasses
import math
import typing

import numpy as np
import pytest
import torch

from da_toolkit.recipe import SelectionConfig
from da_toolkit.validators import (ENSEMBLE_MEMBERS, VALIDATORS, accuracy, batch_nuclear_norm,
                                   class_adjusted_mutual_information, deep_embedded_validation, importance_weights,
                                   information_maximization, negative_entropy, rank_ensemble,
                                   soft_neighbourhood_density, target_knn_precision)

LN2 = math.log(2)


def logits_of(*rows):
    """Logits whose softmax is the given probability rows (0 is written 1e-30, its p log p is ~1e-28)."""
    return torch.log(torch.tensor(rows, dtype=torch.float64).clamp_min(1e-30))


def test_accuracy_mixed_and_empty():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])  # argmax 0, 1, 0
    assert accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)  # right, right, wrong
    assert accuracy(logits, torch.tensor([1, 0, 1])) == 0.0
    assert math.isnan(accuracy(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))


def test_negative_entropy_by_hand_and_sign():
    # H([.5, .5]) = ln 2, H([1, 0]) = 0  ->  −(ln 2 + 0) / 2
    assert negative_entropy(logits_of([0.5, 0.5], [1, 0])) == pytest.approx(-LN2 / 2, rel=1e-9)
    # H([.5, .25, .25]) = .5 ln 2 + 2 · .25 ln 4 = 1.5 ln 2
    assert negative_entropy(logits_of([0.5, 0.25, 0.25])) == pytest.approx(-1.5 * LN2, rel=1e-9)
    # higher is better: a certain prediction (0) beats a hesitant one (−ln 2)
    assert negative_entropy(logits_of([1, 0])) > negative_entropy(logits_of([0.5, 0.5]))
    assert negative_entropy(logits_of([1, 0])) == pytest.approx(0.0, abs=1e-12)


def test_information_maximization_by_hand():
    # confident on different classes: p̄ = [.5, .5], H(p̄) = ln 2, mean H(p_i) = 0  ->  ln 2
    assert information_maximization(logits_of([1, 0], [0, 1])) == pytest.approx(LN2, rel=1e-9)
    # collapse: p̄ = [1, 0], 0 − 0 = 0
    assert information_maximization(logits_of([1, 0], [1, 0])) == pytest.approx(0.0, abs=1e-12)
    # uniform rows: H(p̄) = ln 2, mean H = ln 2  ->  0
    assert information_maximization(logits_of([0.5, 0.5], [0.5, 0.5])) == pytest.approx(0.0, abs=1e-12)
    # [.5, .5] and [1, 0]: p̄ = [.75, .25], H(p̄) = −.75 ln .75 − .25 ln .25, mean H = ln 2 / 2
    expected = -0.75 * math.log(0.75) - 0.25 * math.log(0.25) - LN2 / 2  # = 0.2158...
    assert information_maximization(logits_of([0.5, 0.5], [1, 0])) == pytest.approx(expected, rel=1e-9)
    # three classes, one confident row each: H(p̄) = ln 3 = log C, the maximum
    assert information_maximization(logits_of([1, 0, 0], [0, 1, 0], [0, 0, 1])) == pytest.approx(math.log(3))


def snd_from_docstring(probabilities, temperature):
    """SND written out from the docstring: p̂ = p/‖p‖, S_ij/τ over j ≠ i, softmax, entropy, mean."""
    p = np.asarray(probabilities, dtype=np.float64)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    n, total = len(p), 0.0
    for i in range(n):
        s = np.array([p[i] @ p[j] / temperature for j in range(n) if j != i])
        big_p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        total += -sum(q * math.log(q) for q in big_p if q > 0)
    return total / n


def test_soft_neighbourhood_density_three_rows_by_hand():
    rows = [[1, 0], [0, 1], [0.5, 0.5]]
    # p̂ = [1, 0], [0, 1], [1/√2, 1/√2]; S_12 = 0, S_13 = S_23 = 1/√2.
    # row 3: neighbours 1 and 2 equally close -> P_3 = [.5, .5], H = ln 2.
    # rows 1, 2: softmax([0, (1/√2)/τ]) = [a, 1 − a], a = 1/(1 + e^{(1/√2)/τ}), H = −a ln a − (1−a) ln(1−a)
    for tau in (0.05, 1.0):
        a = 1 / (1 + math.exp((1 / math.sqrt(2)) / tau))
        h = -a * math.log(a) - (1 - a) * math.log(1 - a)
        expected = (2 * h + LN2) / 3
        assert expected == pytest.approx(snd_from_docstring(rows, tau), rel=1e-12)
        assert soft_neighbourhood_density(logits_of(*rows), temperature=tau) == pytest.approx(expected, rel=1e-9)
    # τ = 0.05: a = 1/(1 + e^14.14) ≈ 7.2e-7, SND ≈ ln 2 / 3; τ = 1: a ≈ 0.330, SND ≈ (2 · 0.634 + ln 2)/3
    assert soft_neighbourhood_density(logits_of(*rows)) == pytest.approx(LN2 / 3, abs=1e-4)
    assert soft_neighbourhood_density(logits_of(*rows), temperature=1.0) == pytest.approx(0.654, abs=1e-3)
    # an uneven 3-class case against the independent re-implementation, at the default τ and at τ = 0.5
    rows = [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]
    for tau in (0.05, 0.5):
        assert soft_neighbourhood_density(logits_of(*rows), tau) == pytest.approx(snd_from_docstring(rows, tau),
                                                                                  rel=1e-9)


def test_soft_neighbourhood_density_excludes_the_diagonal():
    # every row identical: each of the N − 1 neighbours is equally close -> H = log(N − 1) (log N with self)
    same = logits_of(*[[0.7, 0.2, 0.1]] * 4)
    assert soft_neighbourhood_density(same) == pytest.approx(math.log(3), rel=1e-9)
    # N = 2: one neighbour each, P_i = [1], entropy 0 exactly (with self it would be ln 2 for identical rows)
    assert soft_neighbourhood_density(logits_of([0.5, 0.5], [0.5, 0.5])) == 0.0
    assert soft_neighbourhood_density(logits_of([1, 0], [0.3, 0.7])) == 0.0


def test_deep_embedded_validation_by_hand():
    losses, weights = torch.tensor([3.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0])
    # L = w ℓ = [3, 2, 6], mean L = 11/3; mean w = 2; Var(w) = (1 + 0 + 1)/2 = 1
    # Cov(L, w) = ((3 − 11/3)(−1) + (2 − 11/3)·0 + (6 − 11/3)(1)) / 2 = (2/3 + 7/3)/2 = 3/2
    # η = −3/2; R = 11/3 + (−3/2)·2 − (−3/2) = 11/3 − 3/2 = 13/6
    assert deep_embedded_validation(losses, weights) == pytest.approx(-13 / 6, rel=1e-12)
    # the control variate matters: plain importance weighting would give −11/3
    assert deep_embedded_validation(losses, weights) != pytest.approx(-11 / 3, rel=1e-3)
    # 4 images: ℓ = [1, 1, 2, 4], w = [.5, .5, 1, 2]: L = [.5, .5, 2, 8], mean L = 2.75, mean w = 1
    # (mean w = 1 so η·mean(w) − η = 0 and R = mean L whatever η is)
    losses, weights = torch.tensor([1.0, 1.0, 2.0, 4.0]), torch.tensor([0.5, 0.5, 1.0, 2.0])
    assert deep_embedded_validation(losses, weights) == pytest.approx(-2.75, rel=1e-12)
    # ℓ = [2, 1, 1], w = [1, 2, 3]: L = [2, 2, 3], mean 7/3; Var w = 1; Cov = ((2 − 7/3)(−1) + (3 − 7/3)(1))/2 = (1/3 + 2/3)/2 = 1/2
    # η = −1/2, R = 7/3 − 1 + 1/2 = 11/6
    assert deep_embedded_validation(torch.tensor([2.0, 1.0, 1.0]), torch.tensor([1.0, 2.0, 3.0])) == \
        pytest.approx(-11 / 6, rel=1e-12)


def test_deep_embedded_validation_constant_weights():
    losses = torch.tensor([0.5, 1.5, 4.0])
    # Var(w) = 0 -> η = 0, R = mean(w ℓ) = mean ℓ = 2 for w = 1, = 0.7 · 2 = 1.4 for w = 0.7
    assert deep_embedded_validation(losses, torch.ones(3)) == -2.0
    assert deep_embedded_validation(losses, torch.full((3,), 0.7, dtype=torch.float64)) == pytest.approx(-1.4, rel=1e-12)
    assert deep_embedded_validation(torch.tensor([3.0]), torch.tensor([2.0])) == -6.0  # one image: η = 0


def domains(n_source=40, n_target=40):
    rng = np.random.default_rng(0)
    return rng.normal(-2, 0.5, (n_source, 1)), rng.normal(2, 0.5, (n_target, 1))


def test_importance_weights_favour_target_like_points():
    source, target = domains()
    weights = importance_weights(source, target, np.array([[-2.0], [-1.0], [0.0], [1.0], [2.0]]))
    assert np.all(np.diff(weights) > 0)  # closer to the target, larger p_T / p_S
    assert weights[0] < 0.1 < 10 < weights[-1]
    assert 0.5 < weights[2] < 2  # halfway between equal clusters: d ≈ 1/2, w ≈ 1


def test_importance_weights_match_the_docstring_classifier():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    source, target = domains(n_source=30, n_target=10)  # n_S / n_T = 3
    weigh = np.array([[-2.5], [-0.3], [0.0], [0.4], [1.5]])
    features = np.concatenate([source, target])
    scaler = StandardScaler().fit(features)
    domain = np.r_[np.zeros(30), np.ones(10)]
    classifier = LogisticRegression(C=1.0, max_iter=200, random_state=7).fit(scaler.transform(features), domain)
    d = np.clip(classifier.predict_proba(scaler.transform(weigh))[:, 1], 1e-3, 1 - 1e-3)
    np.testing.assert_allclose(importance_weights(source, target, weigh, seed=7), 3 * d / (1 - d),
                               rtol=1e-9, atol=0)
    # clipping: far on the target side d -> 1 − 1e-3, w = 3 · 0.999/0.001 = 2997; far on the source side
    # d -> 1e-3, w = 3 · 0.001/0.999
    far = importance_weights(source, target, np.array([[1000.0], [-1000.0]]))
    np.testing.assert_allclose(far, [3 * 999, 3 / 999], rtol=1e-9)


def test_validator_names_are_the_selection_choices():
    assert set(VALIDATORS) == {"source_accuracy", "entropy", "info_max", "dev", "snd", "bnm", "class_ami", "target_knn",
                               "target_label_accuracy"}
    # recipe.py uses `from __future__ import annotations`: the field's type is a string, resolve it first
    field = next(f for f in dataclasses.fields(SelectionConfig) if f.name == "select")
    select = typing.get_type_hints(SelectionConfig)[field.name]
    assert set(typing.get_args(select)) - {"last"} == set(VALIDATORS)
    assert "last" in typing.get_args(select)


def test_batch_nuclear_norm_by_hand():
    # P = I: singular values 1, 1 -> 2 / 2
    assert batch_nuclear_norm(logits_of([1, 0], [0, 1])) == pytest.approx(1.0, rel=1e-9)
    # collapse, P = [[1, 0], [1, 0]]: one singular value √2 -> √2 / 2
    assert batch_nuclear_norm(logits_of([1, 0], [1, 0])) == pytest.approx(math.sqrt(2) / 2, rel=1e-9)
    # hesitant, P = ½·11ᵀ: rank one, σ = ‖P‖_F = 1 -> 1 / 2
    assert batch_nuclear_norm(logits_of([0.5, 0.5], [0.5, 0.5])) == pytest.approx(0.5, rel=1e-9)
    # N = 3 ≠ C = 2: PᵀP = diag(2, 1), σ = √2, 1 -> (√2 + 1) / 3 (divided by N, not C)
    assert batch_nuclear_norm(logits_of([1, 0], [0, 1], [1, 0])) == pytest.approx((math.sqrt(2) + 1) / 3, rel=1e-9)
    # 2 × 2: ‖P‖_* = √(‖P‖_F² + 2|det P|); [[.6, .4], [.2, .8]]: ‖P‖_F² = 1.2, det = .4 -> √2 / 2
    assert batch_nuclear_norm(logits_of([0.6, 0.4], [0.2, 0.8])) == pytest.approx(math.sqrt(2) / 2, rel=1e-9)
    # of the softmax, whatever the logits' offset: z and z + 5 give the same P
    z = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]])
    assert batch_nuclear_norm(z) == pytest.approx(batch_nuclear_norm(z + 5), rel=1e-12)
    # confident and diverse beats confident and collapsed beats hesitant
    assert batch_nuclear_norm(logits_of([1, 0], [0, 1])) > batch_nuclear_norm(logits_of([1, 0], [1, 0])) > \
        batch_nuclear_norm(logits_of([0.5, 0.5], [0.5, 0.5]))


def test_class_ami_by_hand():
    two_ways = logits_of([0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9])  # predictions 0, 0, 1, 1
    # the features point two ways (lengths 1 and 100): the L2-normalised clusters are {0, 1}, {2, 3}, the
    # predictions exactly (AMI 1); raw k-means would cut off the far point [100, 0] alone instead
    features = torch.tensor([[1.0, 0.0], [100.0, 0.0], [0.0, 1.0], [0.0, 100.0]])
    for seed in range(4):
        assert class_adjusted_mutual_information(features, two_ways, seed) == pytest.approx(1.0, abs=1e-12)
    # predictions 0, 1, 0, 1 across clusters {0, 1}, {2, 3}: MI = 0; the hypergeometric n_11 ∈ {0, 1, 2} with
    # probabilities 1/6, 4/6, 1/6 gives E[MI] = (2/6) ln 2; H = ln 2 both: AMI = −(ln2/3) / (ln 2 − ln2/3) = −1/2
    across = logits_of([0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9])
    features = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    assert class_adjusted_mutual_information(features, across) == pytest.approx(-0.5, abs=1e-12)
    # one predicted class: 0 (no information), even when the features form one cluster too (sklearn: 1)
    assert class_adjusted_mutual_information(torch.ones(4, 2), logits_of(*[[0.9, 0.1]] * 4)) == 0.0
    assert math.isnan(class_adjusted_mutual_information(torch.ones(2, 2), logits_of([1, 0, 0], [0, 1, 0])))


def test_class_ami_is_the_docstring_clustering_and_deterministic():
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score

    generator = torch.Generator().manual_seed(3)
    centres = torch.randn(4, 8, generator=generator)
    classes = torch.randint(4, (80,), generator=generator)
    features = centres[classes] + 0.8 * torch.randn(80, 8, generator=generator)
    logits = torch.randn(80, 4, generator=generator) + 3 * torch.nn.functional.one_hot(classes, 4)
    points = torch.nn.functional.normalize(features, dim=1).numpy()
    numpy_rng = np.random.get_state()
    class_adjusted_mutual_information(features, logits, 0)
    # k-means draws from its own generator, never NumPy's global one (training stays bit-identical)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_rng))
    for seed in (0, 5):
        clusters = KMeans(n_clusters=4, n_init=1, random_state=seed).fit_predict(points)
        expected = adjusted_mutual_info_score(logits.argmax(1).numpy(), clusters)
        assert class_adjusted_mutual_information(features, logits, seed) == pytest.approx(expected, abs=1e-12)
        assert class_adjusted_mutual_information(features, logits, seed) == \
            class_adjusted_mutual_information(features, logits, seed)
    assert 0.3 < class_adjusted_mutual_information(features, logits) <= 1


def knn_example():
    """Source a = [5, 0] (class 0; far in length, close in direction), b = [.8, .6], c = [0, 1] (class 1); target
    t1 = [1, .1] predicted 0, t2 = [1, .05] predicted 1, t3 = [0, 1] predicted 0."""
    source = torch.tensor([[5.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.1], [1.0, 0.05], [0.0, 1.0]])
    return target, logits_of([0.9, 0.1], [0.2, 0.8], [0.7, 0.3]), source, torch.tensor([0, 1, 1])


def test_target_knn_by_hand():
    target, logits, source, labels = knn_example()
    # by direction t1 and t2 see a, b, c (labels 0, 1, 1) and t3 sees c, b, a (1, 1, 0):
    # t1 (0): matches 1, 0, 0: AP = 1; t2 (1): 0, 1, 1: AP = (1/2 + 2/3) / 2 = 7/12; t3 (0): 0, 0, 1: AP = 1/3.
    # per predicted class: class 0 (t1, t3) (1 + 1/3) / 2 = 2/3, class 1 (t2) 7/12 -> (2/3 + 7/12) / 2 = 5/8
    # (the mean over images would be 23/36; raw distances put b before a for t1: its AP would be 1/3)
    assert target_knn_precision(target, logits, source, labels) == pytest.approx(5 / 8, rel=1e-12)
    # k = 2: t1 matches 1, 0: 1; t2 0, 1: 1/2; t3 0, 0: 0 (no match: 0) -> class 0: 1/2, class 1: 1/2
    assert target_knn_precision(target, logits, source, labels, k=2) == pytest.approx(0.5, rel=1e-12)
    # a target image predicted as a class no source image of the sample has is left out
    extra = torch.cat([target, torch.tensor([[1.0, 1.0]])])
    three = torch.cat([torch.nn.functional.pad(logits, (0, 1), value=-30.0), torch.tensor([[-9.0, -9.0, 0.0]])])
    assert target_knn_precision(extra, three, source, labels) == pytest.approx(5 / 8, rel=1e-12)
    assert math.isnan(target_knn_precision(target[:1], three[3:], source, labels))


def test_rank_ensemble_by_hand():
    scores = [{"a": 1.0, "b": 3.0, "c": 0.5}, {"a": 2.0, "b": 3.0}, {"a": 3.0, "b": 1.0, "c": float("nan")}]
    # a ranks 1, 2, 3; b ranks 2.5, 2.5, 1 (the tied models share ranks 2 and 3); c is missing or NaN for two
    # models: left out. Means: (1 + 2.5)/2, (2 + 2.5)/2, (3 + 1)/2
    assert rank_ensemble(scores, ("a", "b", "c")) == pytest.approx([1.75, 2.25, 2.0])
    assert rank_ensemble(scores, ("a",)) == [1.0, 2.0, 3.0]  # higher score, higher (better) rank
    assert all(math.isnan(x) for x in rank_ensemble(scores, ("c",)))
    assert rank_ensemble([], ("a",)) == []
    # the default members: four kinds of evidence, every one a per-model validator
    assert set(ENSEMBLE_MEMBERS) <= set(VALIDATORS) and len(ENSEMBLE_MEMBERS) == 4
    models = [{name: float(i) for name in ENSEMBLE_MEMBERS} for i in range(3)]
    models[0]["info_max"] = 10.0  # gaming one member lifts the model by a quarter of a rank per place only
    assert rank_ensemble(models) == pytest.approx([1.5, 1.75, 2.75])
