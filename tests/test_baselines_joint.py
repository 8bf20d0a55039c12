"""DAN, JAN, Deep CORAL, BNM, AFN and BSP (the joint-training family): each loss on tiny tensors worked out
by hand, their defining properties and gradients, option checks, and each method through the pipeline."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from da_toolkit.adapters import ADAPTERS
from da_toolkit.context import Context
from da_toolkit.errors import UserError
from da_toolkit.pipeline import run
from da_toolkit.recipe import load_recipe, recipe_from_dict
from da_toolkit.training.coral import CorrelationAlignmentLoss, coral, covariance
from da_toolkit.training.feature_norm import AdaptiveFeatureNormLoss, stepwise_feature_norm
from da_toolkit.training.mmd import (JointMMDLoss, MultipleKernelMMDLoss, gaussian_kernel, mmd_from_kernel,
                                     multi_gaussian_kernel, squared_distances)
from da_toolkit.training.spectral import BatchNuclearNormLoss, batch_nuclear_norm_loss, batch_spectral_penalty
from da_toolkit.training.target_entropy import TargetEntropyLoss
from conftest import toy_recipe_dict
from test_adversarial import source_only_on_points  # noqa: F401 (a fixture)
from test_dann import fit_on_shifted_points


def numpy_multi_kernel(rows: np.ndarray) -> np.ndarray:
    """DAN's kernel written out: Σ_u exp(−‖x − y‖² / (2 · 2^u · mean squared distance)), u = −3..1."""
    distances = ((rows[:, None, :] - rows[None, :, :]) ** 2).sum(-1)
    return sum(np.exp(-distances / (2 * 2.0 ** u * distances.mean())) for u in range(-3, 2))


def v_statistic(kernel: np.ndarray, n: int) -> float:
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


# ------------------------------------------------------------------------------------------ MMD


def test_squared_distances_and_the_multi_kernel_by_hand():
    rows = torch.tensor([[0.0], [1.0]])
    assert squared_distances(rows).tolist() == [[0.0, 1.0], [1.0, 0.0]]
    # mean D = 1/2, so σ_u² = 2^u / 2 and the off-diagonal entry is Σ_u exp(−1 / 2^u) = Σ_u exp(−2^−u)
    off = sum(math.exp(-(2.0 ** -u)) for u in range(-3, 2))
    assert multi_gaussian_kernel(rows).flatten().tolist() == pytest.approx([5.0, off, off, 5.0], rel=1e-6)
    assert gaussian_kernel(rows, sigma=0.5)[0, 1].item() == pytest.approx(math.exp(-2.0))  # exp(−1 / (2 · 0.25))
    # identical rows: no spread, every kernel is 1 (no division by zero)
    assert multi_gaussian_kernel(torch.ones(3, 2)).tolist() == [[5.0] * 3] * 3


def test_mmd_estimates_from_a_kernel_matrix_by_hand():
    a, b, c, d, e, f = 0.9, 0.2, 0.3, 0.4, 0.1, 0.8  # rows s0, s1, t0, t1
    kernel = torch.tensor([[1, a, b, c], [a, 1, d, e], [b, d, 1, f], [c, e, f, 1]])
    quadratic = (2 + 2 * a) / 4 + (2 + 2 * f) / 4 - 2 * (b + c + d + e) / 4
    assert mmd_from_kernel(kernel, 2, "quadratic").item() == pytest.approx(quadratic)
    # pairs (0, 1) and (1, 0): k(s0,s1) + k(t0,t1) − k(s0,t1) − k(s1,t0), twice
    assert mmd_from_kernel(kernel, 2, "linear").item() == pytest.approx(a + f - c - d)
    with pytest.raises(ValueError, match="equal size"):
        mmd_from_kernel(kernel[:3, :3], 2, "linear")


def test_dan_loss_matches_the_formula_written_out_in_numpy():
    generator = torch.Generator().manual_seed(0)
    source, target = torch.randn(4, 3, generator=generator), torch.randn(4, 3, generator=generator) + 1
    kernel = numpy_multi_kernel(torch.cat([source, target]).double().numpy())
    quadratic, _ = MultipleKernelMMDLoss("quadratic")(source, target)
    assert quadratic.item() == pytest.approx(v_statistic(kernel, 4), rel=1e-5)
    following = [1, 2, 3, 0]
    linear_terms = [kernel[i, j] + kernel[4 + i, 4 + j] - kernel[i, 4 + j] - kernel[j, 4 + i]
                    for i, j in enumerate(following)]
    linear, scalars = MultipleKernelMMDLoss("linear")(source, target)
    assert linear.item() == pytest.approx(np.mean(linear_terms), rel=1e-5) and scalars == {}


@pytest.mark.parametrize("estimate", ["linear", "quadratic"])
def test_mmd_is_zero_for_identical_batches_and_grows_with_a_mean_shift(estimate):
    generator = torch.Generator().manual_seed(1)
    source = torch.randn(32, 4, generator=generator)
    logits = torch.randn(32, 3, generator=generator)
    dan, jan = MultipleKernelMMDLoss(estimate), JointMMDLoss(estimate)
    assert dan(source, source.clone())[0].item() == pytest.approx(0, abs=1e-6)
    assert jan(source, source.clone(), logits, logits.clone())[0].item() == pytest.approx(0, abs=1e-6)
    values = [dan(source, source + shift)[0].item() for shift in (0.5, 1.0, 2.0, 4.0)]
    assert values[0] > 0.01
    if estimate == "quadratic":  # the V-statistic: ‖μ_s − μ_t‖² grows with the shift
        assert values == sorted(values) and values[-1] > 2 * values[0]
    else:  # the linear estimate is noisier, but still far larger for a large shift
        assert values[-1] > 2 * values[0]


def test_jan_kernel_is_the_product_of_the_feature_and_prediction_kernels():
    generator = torch.Generator().manual_seed(2)
    source, target = torch.randn(3, 2, generator=generator), torch.randn(3, 2, generator=generator) + 0.5
    logits_s, logits_t = torch.randn(3, 4, generator=generator), torch.randn(3, 4, generator=generator)
    # the same prediction everywhere: its kernel is 1 and JMMD is DAN's MMD of the features
    same = torch.zeros(3, 4)
    assert JointMMDLoss()(source, target, same, same)[0].item() == pytest.approx(
        MultipleKernelMMDLoss("quadratic")(source, target)[0].item(), rel=1e-6)
    # the same feature everywhere: the feature kernel is 5, so JMMD = 5 × the MMD of the predictions' kernel
    predictions = torch.softmax(torch.cat([logits_s, logits_t]), 1).double().numpy()
    distances = ((predictions[:, None] - predictions[None]) ** 2).sum(-1)
    expected = 5 * v_statistic(np.exp(-distances / (2 * 0.92 ** 2)), 3)
    ones = torch.ones(3, 2)
    assert JointMMDLoss("quadratic", 0.92)(ones, ones, logits_s, logits_t)[0].item() == pytest.approx(expected, rel=1e-5)


def test_mmd_gradient_pulls_the_target_features_towards_the_source():
    source = torch.zeros(8, 2)
    source[:, 0] = torch.linspace(-1, 1, 8)
    target = (source + torch.tensor([1.0, 0.0])).requires_grad_()
    loss, _ = MultipleKernelMMDLoss("quadratic")(source, target)
    loss.backward()
    assert target.grad[:, 0].sum() > 0 and target.grad[:4, 0].min() > 0  # descent moves the target left, onto the source
    assert MultipleKernelMMDLoss("quadratic")(source, target.detach() - 0.1 * target.grad)[0] < loss


# ---------------------------------------------------------------------------------------- CORAL


def test_coral_by_hand():
    source = torch.tensor([[0.0], [2.0]])  # variance ((−1)² + 1²) / 1 = 2
    target = torch.tensor([[1.0], [1.0], [4.0]])  # mean 2, variance (1 + 1 + 4) / 2 = 3
    assert coral(source, target).item() == pytest.approx((2 - 3) ** 2 / 4)
    generator = torch.Generator().manual_seed(3)
    source, target = torch.randn(5, 2, generator=generator), torch.randn(6, 2, generator=generator) * 2
    assert covariance(source).numpy() == pytest.approx(np.cov(source.numpy(), rowvar=False), rel=1e-5)
    difference = np.cov(source.numpy(), rowvar=False) - np.cov(target.numpy(), rowvar=False)
    loss, scalars = CorrelationAlignmentLoss()(source, target)
    assert loss.item() == pytest.approx((difference ** 2).sum() / (4 * 2 ** 2), rel=1e-5) and scalars == {}


def test_coral_is_zero_for_equal_covariances_whatever_the_means():
    generator = torch.Generator().manual_seed(4)
    source = torch.randn(16, 3, generator=generator)
    assert coral(source, source + 5.0).item() == pytest.approx(0, abs=1e-6)  # a mean shift only
    assert coral(source, -source.flip(0)).item() == pytest.approx(0, abs=1e-6)  # reflected and reordered
    assert coral(source, source * 2).item() > 0.01  # covariance × 4


# ------------------------------------------------------------------------------------------ BNM


def test_bnm_by_hand():
    confident = torch.tensor([[30.0, 0.0], [0.0, 30.0]])  # one-hot predictions of two classes: ‖I‖_* = 2
    assert batch_nuclear_norm_loss(confident).item() == pytest.approx(-1.0, abs=1e-6)
    uniform = torch.zeros(2, 2)  # rank one, σ = ‖P‖_F = 1
    assert batch_nuclear_norm_loss(uniform).item() == pytest.approx(-0.5, abs=1e-6)
    collapsed = torch.tensor([[30.0, 0.0], [30.0, 0.0]])  # confident but one class: rank one, σ = √2
    assert batch_nuclear_norm_loss(collapsed).item() == pytest.approx(-math.sqrt(2) / 2, abs=1e-6)
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    singular = np.linalg.svd(torch.softmax(logits, 1).double().numpy(), compute_uv=False)
    loss, scalars = BatchNuclearNormLoss()(None, None, None, logits)
    assert loss.item() == pytest.approx(-singular.sum() / 2, rel=1e-5) and scalars == {}


def test_bnm_gradient_increases_the_nuclear_norm():
    logits = torch.tensor([[0.3, 0.1, 0.0], [0.2, 0.3, 0.0], [0.1, 0.0, 0.2], [0.3, 0.2, 0.1]], requires_grad=True)
    loss = batch_nuclear_norm_loss(logits)
    loss.backward()
    stepped = (logits - 1.0 * logits.grad).detach()
    nuclear = torch.linalg.matrix_norm(torch.softmax(stepped, 1), "nuc")
    assert nuclear > torch.linalg.matrix_norm(torch.softmax(logits.detach(), 1), "nuc") + 1e-3


# ------------------------------------------------------------------------------------------ AFN


def test_afn_value_and_gradient_by_hand():
    features = torch.tensor([[3.0, 4.0], [0.0, 2.0]], requires_grad=True)
    loss = stepwise_feature_norm(features, increment=0.5)
    assert loss.item() == pytest.approx(0.25)  # (‖f‖ − ‖f‖ − Δr)² = Δr², whatever f
    loss.backward()
    # ∂/∂f_i = 2 (‖f_i‖ − ‖f_i‖ − Δr) / B · f_i / ‖f_i‖ = −Δr f_i / ‖f_i‖ for B = 2, Δr = ½
    assert features.grad.flatten().tolist() == pytest.approx([-0.3, -0.4, 0.0, -0.5])


def test_afn_moves_every_target_norm_by_its_increment():
    source = torch.tensor([[1.0, 0.0]])
    target = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    loss, scalars = AdaptiveFeatureNormLoss(increment=1.0)(source, target)
    assert loss.item() == pytest.approx(2.0)  # Δr² per domain
    assert scalars["feature_norm/source"].item() == pytest.approx(1.0)
    assert scalars["feature_norm/target"].item() == pytest.approx((5 + 1 + 2) / 3)
    loss.backward()
    stepped = target.detach() - 1.5 * target.grad  # a step of B/2 reaches the minimum of (r − (r0 + Δr))²
    assert stepped.norm(dim=1).tolist() == pytest.approx([6.0, 2.0, 3.0])  # every norm + Δr, directions kept


def test_target_entropy_by_hand_reads_the_target_predictions_only():
    target = torch.tensor([[0.0, 0.0], [30.0, 0.0]], requires_grad=True)  # uniform: ln 2; one-hot: 0
    source = torch.tensor([[5.0, -5.0], [0.0, 0.0]], requires_grad=True)
    loss, scalars = TargetEntropyLoss()(torch.zeros(2, 3), torch.zeros(2, 3), source, target)
    assert loss.item() == pytest.approx(math.log(2) / 2, rel=1e-6) and scalars == {}
    loss.backward()
    assert source.grad is None
    # at p = (½, ½) the entropy is at its maximum: no gradient; the confident row's gradient is ≈ 0 too
    assert target.grad.abs().max().item() < 1e-6
    tilted = torch.tensor([[1.0, 0.0]], requires_grad=True)
    TargetEntropyLoss()(None, None, None, tilted)[0].backward()
    assert tilted.grad[0, 0] < 0 < tilted.grad[0, 1]  # a descent step sharpens the prediction towards class 0


# ------------------------------------------------------------------------------------------ BSP


def test_bsp_by_hand_and_it_penalises_only_the_largest_singular_value():
    source = torch.tensor([[3.0, 0.0], [0.0, 1.0]], requires_grad=True)  # σ = 3, 1
    target = torch.tensor([[1.0, 1.0], [1.0, 1.0]], requires_grad=True)  # rank one, σ_1 = ‖F‖_F = 2
    loss = batch_spectral_penalty(source, target)
    assert loss.item() == pytest.approx(9 + 4, rel=1e-6)
    loss.backward()
    # ∂σ_1²/∂F = 2 σ_1 u_1 v_1ᵀ: the top direction only, the second singular value is left alone
    assert source.grad.flatten().tolist() == pytest.approx([6.0, 0.0, 0.0, 0.0], abs=1e-5)
    assert target.grad.flatten().tolist() == pytest.approx([2.0, 2.0, 2.0, 2.0], abs=1e-5)


# -------------------------------------------------------------------------------- options, recipes


@pytest.mark.parametrize("feature, message", [
    ({"adapter": "dan", "trade_off": -1}, "feature.trade_off: must be zero or more"),
    ({"adapter": "dan", "estimate": "cubic"}, "feature.estimate"),
    ({"adapter": "jan", "prediction_bandwidth": 0}, "feature.prediction_bandwidth: must be positive"),
    ({"adapter": "coral", "trade_off": -0.5}, "feature.trade_off: must be zero or more"),
    ({"adapter": "bnm", "guard_after": 2}, "feature.guard_after: must lie in"),
    ({"adapter": "afn", "norm_increment": 0}, "feature.norm_increment: must be positive"),
    ({"adapter": "afn", "target_entropy_trade_off": -0.03}, "feature.target_entropy_trade_off: must be zero or more"),
    ({"adapter": "dann", "bsp_trade_off": -1e-4}, "feature.bsp_trade_off: must be zero or more"),
    ({"adapter": "cdan", "bsp_trade_off": -1e-4}, "feature.bsp_trade_off: must be zero or more"),
])
def test_options_are_checked_and_errors_name_the_key(feature, message, write_recipe):
    with pytest.raises(UserError, match=message):
        load_recipe(write_recipe(feature=feature))


def test_bsp_recipe_is_dann_with_the_papers_weight_and_off_by_default():
    from pathlib import Path

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    bsp = load_recipe(recipes / "mnist2usps_bsp.yaml")
    dann = load_recipe(recipes / "mnist2usps_dann.yaml")
    assert bsp.feature.adapter == "dann" and bsp.feature.options.bsp_trade_off == 1e-4
    assert dann.feature.options.bsp_trade_off == 0.0 and load_recipe(recipes / "mnist2usps_cdan.yaml"
                                                                     ).feature.options.bsp_trade_off == 0.0
    bsp_options, dann_options = bsp.feature.options.__dict__, dann.feature.options.__dict__
    assert {k for k in bsp_options if bsp_options[k] != dann_options[k]} == {"bsp_trade_off"}


@pytest.mark.parametrize("domain_batches", ["joint", "separate"])
def test_domain_batches_decides_whose_statistics_batch_norm_normalises_the_source_with(domain_batches):
    """`separate`: the source batch goes through the classifier alone, so in training its batch norm uses the
    source's own statistics and the source outputs do not depend on the target batch; `joint`: one batch
    of both domains, whose statistics both share. Either way each domain gets its own rows back."""
    from da_toolkit.adapters.adversarial import JointAdaptation
    from da_toolkit.adapters.base import AdapterSetup

    recipe = recipe_from_dict(toy_recipe_dict(feature={"adapter": "coral", "domain_batches": domain_batches}))
    setup = AdapterSetup.from_recipe(recipe)
    torch.manual_seed(0)
    classifier = setup.make_classifier(10).train()
    adapter = ADAPTERS.get("coral")(recipe.feature.options, setup)
    assert isinstance(adapter, JointAdaptation)
    source, target = torch.rand(8, 1, 16, 16) * 2 - 1, torch.rand(6, 1, 16, 16) * 2 - 1

    def source_outputs(target_images):
        torch.manual_seed(1)  # the same dropout masks
        (features, logits), (target_features, target_logits) = adapter.forward_domains(classifier, source,
                                                                                      target_images)
        assert features.shape[0] == logits.shape[0] == 8 and target_logits.shape[0] == 6
        return logits

    same = torch.allclose(source_outputs(target), source_outputs(3 * target + 1), atol=1e-6)
    assert same == (domain_batches == "separate")


def test_every_joint_method_sends_each_domain_through_the_classifier_on_its_own():
    """The family's default since 2026-12-05 (TLlib's DANN, CDAN, MCC, JAN, BSP and MDD use one mixed batch;
    its DAN and AFN one batch per domain), in every method's recipe and in the compositions with DANN."""
    from pathlib import Path

    from da_toolkit.adapters.adversarial import JointOptions

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    methods = ("afn", "dan", "coral", "dann", "cdan", "mcc", "dann_mcc", "jan", "bsp", "bnm", "mdd",
               "cyclegan_dann", "dann_dirt_t")
    batches = {method: load_recipe(recipes / f"syndigits2mnist_{method}.yaml").feature.options.domain_batches
               for method in methods}
    assert set(batches.values()) == {"separate"}, batches
    assert JointOptions().domain_batches == "separate"


# ----------------------------------------------------------------------------- through the pipeline


@pytest.mark.parametrize("feature, transfer", [
    ({"adapter": "dan"}, "loss/mmd"),
    ({"adapter": "dan", "estimate": "quadratic"}, "loss/mmd"),
    ({"adapter": "jan"}, "loss/jmmd"),
    ({"adapter": "coral"}, "loss/coral"),
    ({"adapter": "bnm"}, "loss/bnm"),
    ({"adapter": "afn"}, "loss/feature_norm"),
    ({"adapter": "afn", "target_entropy_trade_off": 0.03}, "loss/target_entropy"),
    ({"adapter": "dann", "discriminator_hidden": [16], "bsp_trade_off": 1e-4}, "loss/bsp"),
    ({"adapter": "cdan", "discriminator_hidden": [16], "bsp_trade_off": 1e-4}, "loss/bsp"),
])
def test_each_method_runs_through_the_pipeline_and_logs_its_transfer_loss(feature, transfer, tmp_path, monkeypatch):
    logged = []
    original = Context.log_scalars

    def log_scalars(self, stage, step, scalars):
        logged.append(dict(scalars))
        original(self, stage, step, scalars)

    monkeypatch.setattr(Context, "log_scalars", log_scalars)
    recipe = recipe_from_dict(toy_recipe_dict(feature=feature, train={"iterations": 4, "batch_size": 16,
                                                                      "log_every": 1, "checkpoint_every": 1000}))
    metrics = run(recipe, tmp_path / "run", progress=False)
    steps = [scalars for scalars in logged if "loss/source_ce" in scalars]
    assert len(steps) == 4 and all(math.isfinite(float(s[transfer])) for s in steps)
    assert 0 <= metrics["target_accuracy"] <= 1
    if feature["adapter"] == "afn":
        assert float(steps[0]["loss/feature_norm"]) == pytest.approx(2.0)  # 2 Δr², Δr = 1
        assert float(steps[-1]["feature_norm/target"]) > float(steps[0]["feature_norm/target"])


def test_dann_without_bsp_logs_no_spectral_penalty(tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(Context, "log_scalars", lambda self, stage, step, scalars: logged.append(dict(scalars)))
    recipe = recipe_from_dict(toy_recipe_dict(feature={"adapter": "dann", "discriminator_hidden": [16]},
                                              train={"iterations": 2, "batch_size": 16, "log_every": 1}))
    run(recipe, tmp_path / "run", progress=False)
    assert logged and not any("loss/bsp" in scalars for scalars in logged)


@pytest.mark.parametrize("feature", [
    {"adapter": "dan"},
    {"adapter": "jan"},
    {"adapter": "coral"},
    {"adapter": "bnm"},
    {"adapter": "dann", "discriminator_hidden": [32], "bsp_trade_off": 1e-4},
])
def test_the_aligning_methods_beat_source_only_on_the_shifted_points(feature, source_only_on_points, tmp_path):
    """0.955-0.965 here, source-only 0.775. (AFN, which enlarges feature norms and aligns nothing, gets 0.72.)"""
    torch.set_num_threads(1)
    accuracy, _ = fit_on_shifted_points(ADAPTERS.get(feature["adapter"]), feature, tmp_path)
    assert accuracy > source_only_on_points + 0.1


def test_kernel_distances_and_covariances_stay_float32_under_bf16_autocast():
    generator = torch.Generator().manual_seed(5)
    rows = torch.randn(6, 8, generator=generator) * 10 + 30  # nearby rows with large norms: bf16 would cancel
    with torch.autocast("cpu", dtype=torch.bfloat16):
        distances, covariances = squared_distances(rows), covariance(rows)
    assert distances.dtype == covariances.dtype == torch.float32
    torch.testing.assert_close(distances, squared_distances(rows))
    torch.testing.assert_close(covariances, covariance(rows))
