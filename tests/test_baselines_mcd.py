"""MDD, MCD and AdaBN: their formulas on tiny tensors, MCD's three steps, AdaBN's statistics, short runs."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.context import Context
from da_toolkit.data import DomainDataset, build_domain
from da_toolkit.data.base import conform, to_float
from da_toolkit.errors import UserError
from da_toolkit.evaluate import evaluate
from da_toolkit.models import create_classifier
from da_toolkit.pipeline import run
from da_toolkit.recipe import recipe_from_dict
from da_toolkit.rundir import RunDir
from da_toolkit.training.classifier_discrepancy import classifier_discrepancy
from da_toolkit.training.domain_losses import GradientReversal
from da_toolkit.training.margin_disparity import MarginDisparityDiscrepancyLoss, margin_disparity_loss
from conftest import toy_digits, toy_recipe_dict

# ------------------------------------------------------------------------------------------- MDD

SOURCE_LOGITS = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # the head predicts ŷ_s = (0, 1)
SOURCE_ADVERSARY = torch.tensor([[0.0, 0.0], [1.0, 0.0]])  # h' gives ŷ_s probability ½ and 1 / (1 + e)
TARGET_LOGITS = torch.tensor([[0.0, 3.0]])  # ŷ_t = 1
TARGET_ADVERSARY = torch.tensor([[0.0, math.log(3.0)]])  # h' gives ŷ_t probability ¾


def test_mdd_loss_is_margin_times_source_cross_entropy_plus_the_shifted_log_on_target():
    """L = γ · mean_s −log σ(h'(f_s))[ŷ_s] − mean_t log(1 − σ(h'(f_t))[ŷ_t] + 1e-6), ŷ from the main head."""
    loss, source, target = margin_disparity_loss(SOURCE_LOGITS, SOURCE_ADVERSARY, TARGET_LOGITS, TARGET_ADVERSARY, 4.0)
    expected_source = (math.log(2) + math.log(1 + math.e)) / 2
    expected_target = -math.log(1 - 0.75 + 1e-6)
    assert source.item() == pytest.approx(expected_source, rel=1e-6)
    assert target.item() == pytest.approx(expected_target, rel=1e-6)
    assert loss.item() == pytest.approx(4.0 * expected_source + expected_target, rel=1e-6)


def test_mdd_reverses_its_gradient_into_the_features_only():
    """The adversary descends L; the features get −λ ∂L/∂f; the main head's logits get nothing (ŷ is an argmax)."""
    torch.manual_seed(0)
    adversary = nn.Linear(3, 2)
    source_features, target_features = torch.randn(4, 3), torch.randn(5, 3)
    source_logits, target_logits = torch.randn(4, 2, requires_grad=True), torch.randn(5, 2, requires_grad=True)

    plain_source = source_features.clone().requires_grad_(True)
    plain_target = target_features.clone().requires_grad_(True)
    plain, _, _ = margin_disparity_loss(source_logits, adversary(plain_source), target_logits, adversary(plain_target), 4.0)
    plain.backward()
    expected_weight_grad = adversary.weight.grad.clone()
    adversary.zero_grad()

    module = MarginDisparityDiscrepancyLoss(adversary, 4.0, GradientReversal(0.5))
    reversed_source = source_features.clone().requires_grad_(True)
    reversed_target = target_features.clone().requires_grad_(True)
    loss, scalars = module(reversed_source, reversed_target, source_logits, target_logits)
    loss.backward()
    assert loss.item() == pytest.approx(plain.item())
    assert set(scalars) == {"mdd/source_disparity", "mdd/target_disparity"}
    torch.testing.assert_close(reversed_source.grad, -0.5 * plain_source.grad)
    torch.testing.assert_close(reversed_target.grad, -0.5 * plain_target.grad)
    torch.testing.assert_close(adversary.weight.grad, expected_weight_grad)
    assert source_logits.grad is None and target_logits.grad is None
    assert MarginDisparityDiscrepancyLoss.chance is None


def test_mdd_options_name_their_key():
    with pytest.raises(UserError, match=r"^feature\.margin: must be positive, got 0"):
        recipe_from_dict(toy_recipe_dict(feature={"adapter": "mdd", "margin": 0}))
    with pytest.raises(UserError, match=r"^feature\.grl_warmup: must be 1 or more"):
        recipe_from_dict(toy_recipe_dict(feature={"adapter": "mdd", "grl_warmup": 0}))
    options = ADAPTERS.get("mdd").Options
    assert (options().margin, options().grl_coefficient, options().grl_warmup) == (4.0, 0.1, 1000)


# ------------------------------------------------------------------------------------------- MCD


def test_mcd_discrepancy_is_the_mean_absolute_difference_of_the_probabilities():
    """d = mean_i (1/C) Σ_k |p¹_ik − p²_ik|: (¼ + ¼) / 2 on the first sample, 0 on the second."""
    first = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    second = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    assert classifier_discrepancy(first, second).item() == pytest.approx((0.25 + 0.0) / 2)


def toy_at_16(split: str, shift: int) -> DomainDataset:
    grey = toy_digits(split, shift)
    return DomainDataset(conform(grey.images, 16, 1), grey.labels, grey.name)


def mcd_steps(tmp_path, trade_off: float, num_k: int) -> list[tuple[set, float]]:
    """One MCD iteration with every optimiser step recorded: (the parts of the model it changed, its loss)."""
    torch.manual_seed(0)
    recipe = recipe_from_dict(toy_recipe_dict(feature={"adapter": "mcd", "trade_off": trade_off, "num_k": num_k},
                                              train={"iterations": 1, "batch_size": 16}))
    classifier = create_classifier("lenet", 1, 16, 10, 32)
    ctx = Context(tmp_path, progress=False)
    parts = {id(p): "encoder" for p in classifier.encoder.parameters()}
    parts.update({id(p): "head" for p in classifier.head.parameters()})
    steps = []
    original = ctx.backward_step

    def recorded(loss, optimizer):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        before = [p.detach().clone() for p in params]
        original(loss, optimizer)
        changed = {parts.get(id(p), "second_head") for p, old in zip(params, before) if not torch.equal(p, old)}
        steps.append((changed, loss.item()))

    ctx.backward_step = recorded
    adapter = ADAPTERS.get("mcd")(recipe.feature.options, AdapterSetup.from_recipe(recipe))
    adapter.fit(classifier, toy_at_16("train", 0), toy_at_16("train", 60).without_labels(), ctx)
    ctx.close()
    return steps


def test_mcd_step_b_trains_only_the_heads_and_step_c_only_the_encoder(tmp_path):
    steps = mcd_steps(tmp_path, trade_off=1.0, num_k=3)
    assert [changed for changed, _ in steps] == [{"encoder", "head", "second_head"}, {"head", "second_head"},
                                                 {"encoder"}, {"encoder"}, {"encoder"}]


def test_mcd_heads_ascend_and_encoder_descends_the_discrepancy(tmp_path):
    """With a large trade_off, step B's loss CE₁ + CE₂ − 1000 d is negative, step C's 1000 d positive and falling."""
    steps = mcd_steps(tmp_path, trade_off=1000.0, num_k=3)
    heads_loss, encoder_losses = steps[1][1], [loss for _, loss in steps[2:]]
    assert heads_loss < 0
    assert all(loss > 0 for loss in encoder_losses)
    assert encoder_losses[-1] < encoder_losses[0]


def test_a_short_mcd_run_learns_the_toy_shift(tmp_path):
    recipe = recipe_from_dict(toy_recipe_dict(feature={"adapter": "mcd"}, train={"iterations": 40}))
    metrics = run(recipe, tmp_path / "run", progress=False)
    assert metrics["target_accuracy"] > 0.3  # chance 0.1
    assert (tmp_path / "run" / "checkpoints" / "feature.pt").exists()


# ----------------------------------------------------------------------------------------- AdaBN


def adabn(batch_size: int, passes: float = 1.0):
    recipe = recipe_from_dict(toy_recipe_dict(feature={"adapter": "adabn", "passes": passes},
                                              train={"batch_size": batch_size}))
    return ADAPTERS.get("adabn")(recipe.feature.options, AdapterSetup.from_recipe(recipe))


def test_adabn_sets_the_running_statistics_to_the_target_sets_and_changes_no_weight(tmp_path):
    """One batch holding the whole target set: the bottleneck's BatchNorm1d, which held source statistics,
    ends with that set's mean and unbiased variance of its input (computed with dropout off), its momentum
    restored, no weight changed."""
    torch.manual_seed(0)
    classifier = create_classifier("lenet", 1, 16, 10, 32)
    with torch.no_grad():
        classifier.train()(to_float(toy_at_16("train", 0).images))  # source statistics, one batch tracked
    target = toy_at_16("train", 60).without_labels()
    weights = {name: p.detach().clone() for name, p in classifier.named_parameters()}
    linear, norm = classifier.encoder[1][0], classifier.encoder[1][1]
    with torch.no_grad():
        inputs = linear(classifier.backbone.eval()(to_float(target.images)))
    ctx = Context(tmp_path, progress=False)
    adabn(batch_size=len(target)).fit(classifier.train(), None, target, ctx)
    ctx.close()
    torch.testing.assert_close(norm.running_mean, inputs.mean(0))
    torch.testing.assert_close(norm.running_var, inputs.var(0, unbiased=True))
    assert norm.momentum == 0.1 and norm.num_batches_tracked.item() == 1 and classifier.training
    assert all(torch.equal(p, weights[name]) for name, p in classifier.named_parameters())


def test_adabn_averages_batches_with_equal_weights(tmp_path):
    """Two half batches: the running mean is still the target set's mean (the mean of the batch means)."""
    torch.manual_seed(0)
    classifier = create_classifier("lenet", 1, 16, 10, 32)
    target = toy_at_16("train", 60).without_labels()
    with torch.no_grad():
        inputs = classifier.encoder[1][0](classifier.backbone.eval()(to_float(target.images)))
    ctx = Context(tmp_path, progress=False)
    adabn(batch_size=len(target) // 2, passes=2.0).fit(classifier, None, target, ctx)
    ctx.close()
    torch.testing.assert_close(classifier.encoder[1][1].running_mean, inputs.mean(0))
    assert classifier.encoder[1][1].num_batches_tracked.item() == 4


def test_adabn_without_batch_norm_says_so(tmp_path):
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    ctx = Context(tmp_path, progress=False)
    adabn(batch_size=16).fit(classifier, None, toy_at_16("train", 60).without_labels(), ctx)
    ctx.close()
    assert "no batch-norm layer" in (tmp_path / "log.txt").read_text()
    with pytest.raises(UserError, match="feature.passes"):
        ADAPTERS.get("adabn").Options(passes=0)


def test_adabn_after_source_only_on_the_toy_shift(tmp_path):
    """source_only through the pipeline, then AdaBN's fit on its classifier: the brighter target's
    statistics replace the source's in the bottleneck (lenet has no other batch norm)."""
    recipe = recipe_from_dict(toy_recipe_dict(feature={"adapter": "source_only"}))
    before = run(recipe, tmp_path / "run", progress=False)["target_accuracy"]
    weights, num_classes = RunDir(tmp_path / "run").load_classifier()
    setup = AdapterSetup.from_recipe(recipe)
    classifier = setup.make_classifier(num_classes)
    classifier.load_state_dict(weights)
    target = build_domain(recipe.data.target, 16, 1, recipe.seed).without_labels()
    ctx = Context(tmp_path / "adabn", progress=False)
    adabn(batch_size=32).fit(classifier, None, target, ctx)
    ctx.close()
    test = build_domain(recipe.data.target_test, 16, 1, recipe.seed)
    after = evaluate(classifier, test, torch.device("cpu"))["accuracy"]
    print(f"toy shift, target accuracy: source_only {before:.3f}, + AdaBN {after:.3f}")
    assert after > 0.5
