"""DANN: the gradient reversal layer, the λ schedule, the domain loss, and adaptation on a toy shift."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from da_toolkit.adapters.adversarial import AdversarialOptions
from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.adapters.dann import DANN
from da_toolkit.adapters.source_only import SourceOnly
from da_toolkit.context import Context
from da_toolkit.data import DomainDataset
from da_toolkit.evaluate import evaluate
from da_toolkit.models.classifier import DomainClassifier
from da_toolkit.errors import UserError
from da_toolkit.models import DomainDiscriminator
from da_toolkit.recipe import load_recipe, recipe_from_dict
from da_toolkit.training.domain_losses import (DomainAdversarialLoss, GradientReversal, domain_bce,
                                               domain_classification_loss, inverted_label_loss)
from conftest import toy_recipe_dict


def test_gradient_reversal_is_identity_forward_and_negated_scaled_backward():
    x = torch.tensor([[1.5, -2.0, 0.25]], requires_grad=True)
    grl = GradientReversal(coefficient=0.3)
    y = grl(x)
    assert torch.equal(y, x.detach())
    upstream = torch.tensor([[2.0, -1.0, 4.0]])
    y.backward(upstream)
    assert torch.allclose(x.grad, torch.tensor([[-0.6, 0.3, -1.2]]))
    grl.coefficient = 0.0
    x.grad = None
    grl(x).backward(upstream)
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_reversal_coefficient_warms_up_over_iterations_or_progress_or_stays_fixed():
    warmup = AdversarialOptions()  # H = 10,000 iterations, whatever the run's length
    assert warmup.reversal_coefficient(0, 1000) == 0.0
    assert warmup.reversal_coefficient(1000, 1000) == pytest.approx(2 / (1 + math.exp(-1)) - 1)  # 0.462117
    assert warmup.reversal_coefficient(1000, 1000) == pytest.approx(0.462117, abs=1e-6)
    assert warmup.reversal_coefficient(1000, 50000) == warmup.reversal_coefficient(1000, 1000)
    assert warmup.reversal_coefficient(5000, 10000) == pytest.approx(0.986614, abs=1e-6)
    progress = AdversarialOptions(grl_warmup=None)  # the paper's λ_p over progress p = i / iterations
    assert progress.reversal_coefficient(500, 1000) == pytest.approx(0.986614, abs=1e-6)
    assert progress.reversal_coefficient(1000, 1000) == pytest.approx(0.999909, abs=1e-6)
    assert AdversarialOptions(grl_coefficient=0.5).reversal_coefficient(10000, 10000) == pytest.approx(0.4999546,
                                                                                                       abs=1e-6)
    fixed = AdversarialOptions(grl="fixed", grl_coefficient=0.1)
    assert fixed.reversal_coefficient(0, 10) == fixed.reversal_coefficient(7, 10) == 0.1


def test_domain_loss_on_hand_made_logits():
    source_logits = torch.tensor([2.0, -1.0])
    target_logits = torch.tensor([-3.0, 0.5, 1.0])
    loss, accuracy = domain_classification_loss(source_logits, target_logits)

    def log_sigmoid(z):
        return math.log(1 / (1 + math.exp(-z)))

    expected = -(sum(log_sigmoid(z) for z in (2.0, -1.0)) / 2 + sum(log_sigmoid(-z) for z in (-3.0, 0.5, 1.0)) / 3)
    assert loss.item() == pytest.approx(expected, rel=1e-6)  # ADDA: the sum of the two domains' terms
    assert accuracy.item() == pytest.approx(2 / 5)  # right: source 2.0, target -3.0
    mean, _ = domain_bce(source_logits, target_logits)  # DANN: their mean
    assert mean.item() == pytest.approx(expected / 2, rel=1e-6)
    weighted, _ = domain_bce(source_logits, target_logits, torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0, 3.0]))
    assert weighted.item() == pytest.approx(-(2 * log_sigmoid(2.0) / 2 + (log_sigmoid(3.0) + log_sigmoid(-0.5)
                                                                          + 3 * log_sigmoid(-1.0)) / 3) / 2, rel=1e-6)
    assert inverted_label_loss(target_logits).item() == pytest.approx(
        -sum(log_sigmoid(z) for z in (-3.0, 0.5, 1.0)) / 3, rel=1e-6)


def test_domain_adversarial_loss_reverses_the_feature_gradient_only():
    torch.manual_seed(0)
    discriminator = DomainDiscriminator(4, hidden=[8], batch_norm=False, dropout=0)
    adversarial = DomainAdversarialLoss(discriminator, GradientReversal(0.5))
    source, target = torch.randn(3, 4, requires_grad=True), torch.randn(2, 4, requires_grad=True)
    loss, scalars = adversarial(source, target)
    assert set(scalars) == {"domain/accuracy", "domain/logit_scale"}
    loss.backward()
    reversed_grads = [source.grad.clone(), target.grad.clone()]
    discriminator_grads = [p.grad.clone() for p in discriminator.parameters()]

    source.grad = target.grad = None
    discriminator.zero_grad()
    plain, _ = domain_bce(discriminator(source), discriminator(target))
    assert plain.item() == pytest.approx(loss.item())
    plain.backward()
    assert torch.allclose(reversed_grads[0], -0.5 * source.grad)
    assert torch.allclose(reversed_grads[1], -0.5 * target.grad)
    assert all(torch.allclose(a, p.grad) for a, p in zip(discriminator_grads, discriminator.parameters()))


def test_discriminator_shapes_and_layers():
    dann = DomainDiscriminator(256)
    assert [m.out_features for m in dann if isinstance(m, torch.nn.Linear)] == [1024, 1024, 1]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in dann) == 2
    assert sum(isinstance(m, torch.nn.Dropout) for m in dann) == 2
    adda = DomainDiscriminator(256, [500, 500], batch_norm=False, dropout=0)
    assert [type(m).__name__ for m in adda] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert adda(torch.randn(7, 256)).shape == (7,)


def test_dann_options_are_validated(write_recipe):
    with pytest.raises(UserError, match="feature.grl: expected one of: schedule, fixed, got 'cosine'"):
        load_recipe(write_recipe(feature={"adapter": "dann", "grl": "cosine"}))
    with pytest.raises(UserError, match="feature.discriminator_dropout: must lie in"):
        load_recipe(write_recipe(feature={"adapter": "dann", "discriminator_dropout": 1.5}))
    recipe = load_recipe(write_recipe(feature={"adapter": "dann"}), ["feature.discriminator_hidden=[64]"])
    assert recipe.feature.options.discriminator_hidden == [64]


def shifted_points(count: int, shift: float, seed: int) -> DomainDataset:
    """Two classes of 2-D points stored as 1×1×2 images: class c at x1 = 2c − 1, noise 0.4.
    The target domain moves both coordinates by `shift`, so a source-only classifier (which
    reads x1) misplaces the target, while x1 − x2 separates the classes in both domains: the
    feature that domain alignment has to find."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 2
    points = torch.randn(count, 2, generator=generator) * 0.4
    points[:, 0] += labels.float() * 2 - 1
    points += shift
    images = (127.5 + 40 * points).clamp(0, 255).round().to(torch.uint8).view(count, 1, 1, 2)
    return DomainDataset(images, labels, f"points+{shift}", num_classes=2)


def fit_on_shifted_points(adapter, feature: dict, tmp_path) -> tuple[float, Context]:
    torch.manual_seed(2)
    recipe = recipe_from_dict(toy_recipe_dict(feature=feature, train={"iterations": 400, "batch_size": 64}, seed=2))
    classifier = DomainClassifier(nn.Flatten(), feature_dim=2, bottleneck_dim=2, num_classes=2)
    ctx = Context(tmp_path, progress=False)
    target = shifted_points(400, 1.0, seed=1).without_labels()
    adapter(recipe.feature.options, AdapterSetup.from_recipe(recipe)).fit(classifier, shifted_points(400, 0.0, seed=0), target, ctx)
    ctx.close()
    return evaluate(classifier, shifted_points(400, 1.0, seed=2), torch.device("cpu"))["accuracy"], ctx


def test_dann_aligns_a_shifted_toy_domain_and_beats_source_only(tmp_path):
    torch.set_num_threads(1)
    source_only, _ = fit_on_shifted_points(SourceOnly, {"adapter": "source_only"}, tmp_path / "source_only")
    dann, ctx = fit_on_shifted_points(DANN, {"adapter": "dann", "discriminator_hidden": [32],
                                             "discriminator_dropout": 0.0}, tmp_path / "dann")
    assert source_only < 0.85  # the shift puts half of target class 0 on the wrong side (0.775 here)
    assert dann > max(0.9, source_only + 0.1)  # 0.955 here
    assert ctx.metrics["feature"]["domain_accuracy"] < 0.65  # the discriminator is near chance (0.5) at the end
