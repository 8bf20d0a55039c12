"""Validators: every score checked against arithmetic done by hand on 2-4 images and 2-3 classes."""
from __future__ import annotations

import dataclasses
import math
import typing

import numpy as np
import pytest
import torch

from da_toolkit.recipe import SelectionConfig
from da_toolkit.validators import (VALIDATORS, accuracy, deep_embedded_validation, importance_weights,
                                   information_maximization, negative_entropy, soft_neighbourhood_density)

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
    assert set(VALIDATORS) == {"source_accuracy", "entropy", "info_max", "dev", "snd", "target_label_accuracy"}
    # recipe.py uses `from __future__ import annotations`: the field's type is a string, resolve it first
    field = next(f for f in dataclasses.fields(SelectionConfig) if f.name == "select")
    select = typing.get_type_hints(SelectionConfig)[field.name]
    assert set(typing.get_args(select)) - {"last"} == set(VALIDATORS)
    assert "last" in typing.get_args(select)
