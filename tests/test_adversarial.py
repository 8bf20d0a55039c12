"""The adversarial family: CDAN's and MCC's formulas on hand-made tensors, gradient signs, the
divergence guard, DANN with the DTN on a colour toy shift, and every method on a shifted toy domain."""
from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.adversarial import DivergenceGuard, GuardOptions, TrainingDiverged
from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.adapters.source_only import SourceOnly
from da_toolkit.context import Context
from da_toolkit.data import DomainDataset
from da_toolkit.data.base import conform
from da_toolkit.errors import UserError
from da_toolkit.evaluate import evaluate
from da_toolkit.models import create_classifier
from da_toolkit.recipe import load_recipe, recipe_from_dict
from da_toolkit.training.class_confusion import MinimumClassConfusionLoss, minimum_class_confusion
from da_toolkit.training.conditional_adversarial import (ConditionalDomainAdversarialLoss, entropy, entropy_weights,
                                                         multilinear_map)
from da_toolkit.training.domain_losses import GradientReversal
from conftest import toy_digits, toy_recipe_dict
from test_dann import fit_on_shifted_points

LN3 = math.log(3)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def linear_discriminator(weights: list[float]) -> nn.Module:
    """d(h) = w · h, no bias: logits of shape (N,)."""
    layer = nn.Linear(len(weights), 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weights]))
    return nn.Sequential(layer, nn.Flatten(0))


# ---------------------------------------------------------------------------------------- CDAN


def test_multilinear_map_is_the_flattened_outer_product():
    features = torch.tensor([[1.0, 2.0, 3.0]])
    predictions = torch.tensor([[0.25, 0.75]])
    assert torch.equal(multilinear_map(features, predictions),
                       torch.tensor([[0.25, 0.5, 0.75, 0.75, 1.5, 2.25]]))  # [g_0 f, g_1 f]


def test_entropy_and_entropy_weights_by_hand():
    predictions = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
    h0 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # 0.562335
    assert entropy(predictions).tolist() == pytest.approx([h0, math.log(2)], rel=1e-6)
    raw = [1 + math.exp(-h0), 1.5]  # 1 + exp(-ln 2) = 1.5
    assert entropy_weights(predictions).tolist() == pytest.approx([2 * r / sum(raw) for r in raw], rel=1e-6)
    assert entropy_weights(predictions).tolist() == pytest.approx([1.022762, 0.977238], abs=1e-6)


def cdan_case(entropy_conditioning: bool):
    """Source f = (1, 2) predicted (½, ½); target f = (3, −1) predicted (¾, ¼); d(h) = h_0 + h_3."""
    source_features = torch.tensor([[1.0, 2.0]], requires_grad=True)
    target_features = torch.tensor([[3.0, -1.0]], requires_grad=True)
    source_logits = torch.tensor([[0.0, 0.0]], requires_grad=True)
    target_logits = torch.tensor([[LN3, 0.0]], requires_grad=True)
    loss_fn = ConditionalDomainAdversarialLoss(linear_discriminator([1.0, 0.0, 0.0, 1.0]), GradientReversal(0.5),
                                               entropy_conditioning)
    loss, scalars = loss_fn(source_features, target_features, source_logits, target_logits)
    return loss, scalars, (source_features, target_features, source_logits, target_logits)


def test_cdan_loss_by_hand():
    # h_s = vec(g fᵀ) = (0.5, 1, 0.5, 1) -> d_s = 0.5 + 1 = 1.5; h_t = (2.25, -0.75, 0.75, -0.25) -> d_t = 2.0
    loss, scalars, _ = cdan_case(entropy_conditioning=False)
    assert loss.item() == pytest.approx(0.5 * (softplus(-1.5) + softplus(2.0)), rel=1e-6)
    assert scalars["domain/accuracy"].item() == 0.5  # source right (1.5 > 0), target wrong (2.0 > 0)
    assert scalars["domain/logit_scale"].item() == pytest.approx(1.75)
    weighted, _, _ = cdan_case(entropy_conditioning=True)
    w_s, w_t = 0.977238, 1.022762  # the source prediction is the uncertain one
    assert weighted.item() == pytest.approx(0.5 * (w_s * softplus(-1.5) + w_t * softplus(2.0)), rel=1e-5)


def test_cdan_reverses_the_feature_gradient_and_leaves_the_conditioning_without_one():
    loss, _, (source_features, target_features, source_logits, target_logits) = cdan_case(False)
    loss.backward()
    # dL/dd_s = ½ (σ(1.5) − 1), dL/dd_t = ½ σ(2); dd/df = (g_0, 0) + (0, g_1) = (g_0, g_1); R_0.5 gives −0.5 ×
    ds, dt = 0.5 * (1 / (1 + math.exp(-1.5)) - 1), 0.5 / (1 + math.exp(-2.0))
    assert source_features.grad[0].tolist() == pytest.approx([-0.5 * ds * 0.5, -0.5 * ds * 0.5], rel=1e-5)
    assert target_features.grad[0].tolist() == pytest.approx([-0.5 * dt * 0.75, -0.5 * dt * 0.25], rel=1e-5)
    assert source_features.grad[0, 0] > 0 > target_features.grad[0, 0]  # ascent: make source look like target
    assert source_logits.grad is None and target_logits.grad is None


# ----------------------------------------------------------------------------------------- MCC


def test_mcc_by_hand():
    logits = torch.tensor([[LN3, 0.0], [0.0, 0.0]])  # softmax: (¾, ¼) and (½, ½) at T = 1
    w0, w1 = 1.022762, 0.977238
    c00, c01, c11 = w0 * 0.5625 + w1 * 0.25, w0 * 0.1875 + w1 * 0.25, w0 * 0.0625 + w1 * 0.25
    expected = (c01 / (c00 + c01) + c01 / (c01 + c11)) / 2
    assert expected == pytest.approx(0.466584, abs=1e-5)
    assert minimum_class_confusion(logits, temperature=1.0).item() == pytest.approx(expected, rel=1e-5)
    # T = 2 halves the logits: (√3/(1+√3), 1/(1+√3)) and (½, ½) are less confident, so more confusion
    assert minimum_class_confusion(logits, temperature=2.0).item() > expected
    assert minimum_class_confusion(torch.tensor([[20.0, 0.0], [0.0, 20.0]]), 1.0).item() == pytest.approx(0, abs=1e-7)
    assert minimum_class_confusion(torch.zeros(4, 3), 1.0).item() == pytest.approx(2 / 3)  # uniform: (C-1)/C


def test_mcc_gradient_sharpens_the_predictions():
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]], requires_grad=True)
    loss, scalars = MinimumClassConfusionLoss(temperature=2.5)(None, None, None, logits)
    assert scalars == {}
    loss.backward()
    assert logits.grad[0, 0] < 0 and logits.grad[1, 1] < 0  # descent raises each sample's top class
    assert logits.grad[0, 1] > 0 and logits.grad[1, 0] > 0
    stepped = minimum_class_confusion((logits - 0.5 * logits.grad).detach(), 2.5)
    assert stepped < loss


# ------------------------------------------------------------------------------------ the guard


def guard_scalars(source_ce: float, domain: float = 0.7, total: float | None = None) -> dict:
    return {"loss/total": torch.tensor(source_ce + domain if total is None else total),
            "loss/source_ce": torch.tensor(source_ce), "loss/domain": torch.tensor(domain)}


def test_guard_stops_a_source_classifier_at_chance_after_its_share_of_the_budget(tmp_path):
    ctx = Context(tmp_path, progress=False)
    guard = DivergenceGuard("feature", 1000, 10, GuardOptions("stop", 0.2), {"loss/domain": math.log(2)}, window=50)
    for iteration in range(1, 200):  # before 20% of the budget the guard only watches
        guard.check(iteration, guard_scalars(2.30), ctx)
    with pytest.raises(TrainingDiverged, match=r"^feature: training diverged at iteration 200 of 1000: the source "
                                               r"classification loss is still at chance \(2.300, chance ln 10 = 2.303"):
        guard.check(200, guard_scalars(2.30), ctx)
    learning = DivergenceGuard("feature", 1000, 10, GuardOptions("stop", 0.2), {"loss/domain": math.log(2)}, window=50)
    for iteration in range(1, 400):
        learning.check(iteration, guard_scalars(2.0), ctx)  # below 0.9 ln 10 = 2.072: learning


def test_a_short_run_is_judged_on_its_last_iterations_not_its_first_fifth(tmp_path):
    ctx = Context(tmp_path, progress=False)
    short = DivergenceGuard("feature", 300, 10, GuardOptions("stop", 0.2), {}, window=50)
    for iteration in range(1, 200):  # 20% of 300 is 60, but nothing is judged before iteration 200
        short.check(iteration, guard_scalars(2.30), ctx)
    with pytest.raises(TrainingDiverged, match="at iteration 200 of 300"):
        short.check(200, guard_scalars(2.30), ctx)
    tiny = DivergenceGuard("feature", 120, 10, GuardOptions("stop", 0.2), {}, window=50)
    for iteration in range(1, 120):
        tiny.check(iteration, guard_scalars(2.30), ctx)
    with pytest.raises(TrainingDiverged, match="at iteration 120 of 120"):  # a run shorter than 200: its last
        tiny.check(120, guard_scalars(2.30), ctx)


def test_guard_on_the_domain_loss_warns_once_when_asked_and_stops_on_nan(tmp_path):
    ctx = Context(tmp_path, progress=False)
    guard = DivergenceGuard("feature", 100, 10, GuardOptions("warn", 0.0), {"loss/domain": math.log(2)}, window=10)
    for iteration in range(1, 20):
        guard.check(iteration, guard_scalars(1.0, domain=6.0), ctx)  # 6.0 < 10 ln 2 = 6.93
    assert "guard" not in ctx.metrics.get("feature", {})
    for iteration in range(20, 40):
        guard.check(iteration, guard_scalars(1.0, domain=11.0), ctx)
    assert ctx.metrics["feature"]["guard"].startswith(
        "feature: training diverged at iteration 21 of 100: loss/domain = 7.000 is far above its chance value 0.693")
    stop = DivergenceGuard("feature", 100, 10, GuardOptions("stop", 0.5), {}, window=10)
    with pytest.raises(TrainingDiverged, match="iteration 3 of 100: the loss is nan"):
        stop.check(3, guard_scalars(1.0, total=float("nan")), ctx)
    DivergenceGuard("feature", 100, 10, GuardOptions("ignore", 0.0), {}, window=10).check(
        60, guard_scalars(9.0, total=math.inf), ctx)


def test_every_guard_message_names_only_keys_the_method_has():
    """The guard's advice (which weight to lower, which warm-up to lengthen) in the keys of the method whose run it
    stopped: a DAN run was once told to lengthen DANN's grl_warmup, which DAN does not have."""
    import dataclasses

    from da_toolkit.adapters import ADAPTERS

    checked = 0
    for name in ADAPTERS.names():
        options_class = getattr(ADAPTERS.get(name), "Options", None)
        if options_class is None or not issubclass(options_class, GuardOptions):
            continue
        keys = {field.name for field in dataclasses.fields(options_class)}
        options = options_class.__new__(options_class)  # the defaults, without the checks of required keys (SHOT's)
        options.guard, options.guard_after = "stop", 0.2
        guard = DivergenceGuard("feature", 300, 10, options, {}, window=10)
        for _ in range(10):
            guard.means["loss/source_ce"].add(torch.tensor(2.30))  # at chance: stalled
        messages = [guard.problem(200, guard_scalars(2.30, total=float("nan"))), guard.stalled()]
        named = {key for message in messages for key in re.findall(r"feature\.(\w+)", message)}
        assert named and named <= keys, f"{name}: the guard names {sorted(named - keys)}, not keys of {name}"
        checked += 1
    assert checked >= 12  # the adversarial, discrepancy, self-training and VADA families


def test_guard_options_are_validated(write_recipe):
    with pytest.raises(UserError, match="feature.guard: expected one of: stop, warn, ignore, got 'maybe'"):
        load_recipe(write_recipe(feature={"adapter": "cdan", "guard": "maybe"}))
    with pytest.raises(UserError, match=r"feature.guard_after: must lie in \[0, 1\], got 1.5"):
        load_recipe(write_recipe(feature={"adapter": "mcc", "guard_after": 1.5}))
    with pytest.raises(UserError, match="feature.mcc_temperature: must be positive"):
        load_recipe(write_recipe(feature={"adapter": "dann", "mcc_temperature": 0}))


def test_guard_stops_a_broken_dann_run_through_the_cli(write_recipe, tmp_path, capsys):
    from da_toolkit.cli import main

    path = write_recipe(feature={"adapter": "dann", "trade_off": 50, "grl_warmup": None, "guard_after": 0.25},
                        train={"iterations": 200}, output_dir=str(tmp_path / "runs"))
    with pytest.raises(SystemExit) as stop:
        main(["run", str(path), "--quiet"])
    assert stop.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: feature: training diverged at iteration ")
    assert "likely cause" in line
    run_dir = tmp_path / "runs" / "toy"  # says why it holds no metrics.json, as the terminal did
    assert not (run_dir / "metrics.json").exists()
    assert "stopped: feature: training diverged at iteration " in (run_dir / "log.txt").read_text()


# ---------------------------------------------------------------------------- DANN with the DTN


def colour_toy(split: str, target: bool) -> DomainDataset:
    """`toy_digits` at 16×16 in colour: each source image tinted by a random colour, the target
    grey and brighter, so the two domains are told apart at a glance (as syndigits and MNIST)."""
    grey = toy_digits(split, 60 if target else 0)
    images = conform(grey.images, 16, 3).float()
    if not target:
        tint = torch.rand(len(images), 3, 1, 1, generator=torch.Generator().manual_seed(3)) * 0.7 + 0.3
        images = images * tint
    return DomainDataset(images.round().to(torch.uint8), grey.labels, f"colour-toy/{split}")


def test_dann_with_the_dtn_learns_the_source_of_a_colour_toy_shift_in_a_short_run(tmp_path):
    """On a short budget the old defaults (domain loss summed over the domains, λ ramped over the
    run's progress, a batch-norm discriminator) left the DTN's source accuracy at chance (0.10
    here; 1.00 now)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    recipe = recipe_from_dict(toy_recipe_dict(
        data={"image_size": 16, "channels": 3}, classifier={"backbone": "dtn", "bottleneck_dim": 32},
        feature={"adapter": "dann", "guard": "ignore"}, train={"iterations": 60, "batch_size": 32}))
    classifier = create_classifier("dtn", 3, 16, 10, 32)
    ctx = Context(tmp_path, progress=False)
    source, target = colour_toy("train", False), colour_toy("train", True).without_labels()
    ADAPTERS.get("dann")(recipe.feature.options, AdapterSetup.from_recipe(recipe)).fit(classifier, source, target, ctx)
    ctx.close()
    assert evaluate(classifier, colour_toy("test", False), torch.device("cpu"))["accuracy"] > 0.8


# ---------------------------------------------------------------------------- the whole family


@pytest.fixture(scope="module")
def source_only_on_points(tmp_path_factory):
    accuracy, _ = fit_on_shifted_points(SourceOnly, {"adapter": "source_only"}, tmp_path_factory.mktemp("source_only"))
    assert accuracy == pytest.approx(0.775)
    return accuracy


@pytest.mark.parametrize("feature", [
    {"adapter": "dann", "discriminator_hidden": [32]},
    {"adapter": "cdan", "discriminator_hidden": [32]},
    {"adapter": "cdan", "discriminator_hidden": [32], "entropy_conditioning": True},
    {"adapter": "mcc"},
    {"adapter": "dann", "discriminator_hidden": [32], "mcc_trade_off": 1.0},
    {"adapter": "cdan", "discriminator_hidden": [32], "mcc_trade_off": 1.0},
])
def test_every_method_of_the_family_beats_source_only_on_the_shifted_points(feature, source_only_on_points, tmp_path):
    """Every method (0.93-0.96 here) well above source-only (0.775) and chance (0.5)."""
    torch.set_num_threads(1)
    accuracy, _ = fit_on_shifted_points(ADAPTERS.get(feature["adapter"]), feature, tmp_path)
    assert accuracy > source_only_on_points + 0.1


# ------------------------------------------------------------------ the peer's optimiser protocol


def toy_at_16(split: str, shift: int) -> DomainDataset:
    grey = toy_digits(split, shift)
    return DomainDataset(conform(grey.images, 16, 1), grey.labels, grey.name)


def test_nesterov_inverse_decay_and_weight_decay_are_recipe_keys(write_recipe):
    from da_toolkit.adapters.base import SupervisedTraining

    recipe = load_recipe(write_recipe(feature={"adapter": "dann"}), [
        "train.nesterov=true", "train.lr_schedule=inverse", "train.lr_gamma=0.001", "train.lr_decay=0.75",
        "train.weight_decay=0.001"])
    classifier = create_classifier("lenet", 1, 16, 10, 32)
    training = SupervisedTraining(classifier, toy_at_16("train", 0), toy_at_16("train", 60), recipe.train,
                                  Context(write_recipe().parent / "run", progress=False))
    group = training.optimizer.param_groups[0]
    assert group["nesterov"] is True and group["weight_decay"] == 0.001 and group["momentum"] == 0.9
    factor = training.scheduler.lr_lambdas[0]
    assert factor(0) == 1.0
    assert factor(1000) == pytest.approx(2 ** -0.75)  # (1 + 0.001 · 1000)^-0.75, whatever train.iterations is
    with pytest.raises(UserError, match="train.nesterov: needs train.optimizer=sgd and train.momentum > 0"):
        load_recipe(write_recipe(), ["train.nesterov=true", "train.momentum=0"])
