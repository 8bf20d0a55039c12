"""VADA / DIRT-T (Shu et al. 2018): its losses by hand (training/virtual_adversarial.py) and the adapter's stages."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.adapters.dirt_t import DirtT
from da_toolkit.context import Context
from da_toolkit.data import DomainDataset
from da_toolkit.data.base import BatchStream, conform
from da_toolkit.errors import UserError
from da_toolkit.models import create_classifier
from da_toolkit.pipeline import run
from da_toolkit.recipe import recipe_from_dict
from da_toolkit.training.checkpoint import load_checkpoint
from da_toolkit.training.virtual_adversarial import (adversarial_direction, conditional_entropy, softmax_kl,
                                                     virtual_adversarial_loss)
from conftest import toy_digits, toy_recipe_dict


# ----------------------------------------------------------------------------------------- losses


def test_conditional_entropy_is_the_mean_entropy_of_the_predictions():
    # p = (1/2, 1/2) and (3/4, 1/4): H = mean(ln 2, −(3/4 ln 3/4 + 1/4 ln 1/4))
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    expected = 0.5 * (math.log(2) - (0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert float(conditional_entropy(logits)) == pytest.approx(expected, rel=1e-6)
    assert float(conditional_entropy(torch.tensor([[30.0, 0.0, 0.0]]))) == pytest.approx(0.0, abs=1e-10)


def test_teacher_kl_is_kl_of_teacher_to_student_and_trains_the_student_only():
    teacher = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)  # p_teacher = (3/4, 1/4)
    student = torch.tensor([[0.0, 0.0]], requires_grad=True)  # p = (1/2, 1/2)
    divergence = softmax_kl(teacher, student)
    # KL(teacher || student) = 3/4 ln(3/4 / 1/2) + 1/4 ln(1/4 / 1/2), not KL(student || teacher)
    assert float(divergence.detach()) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-6)
    divergence.backward()
    assert teacher.grad is None  # the teacher is a constant
    assert torch.allclose(student.grad, torch.tensor([[0.5 - 0.75, 0.5 - 0.25]]))  # p − p_teacher


def linear_model(seed: int = 0) -> nn.Module:
    """z = W vec(x) + b on 1×1×3 images, 4 classes, in float64."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3, 4)).double()


IMAGES = torch.tensor([[[[0.5, -1.0, 0.25]]], [[[-0.3, 0.8, 0.1]]]], dtype=torch.float64)


def test_vat_direction_is_one_power_iteration_of_the_kl_hessian_worked_by_hand():
    model = linear_model()
    weight = model[1].weight.detach()
    torch.manual_seed(7)
    direction = adversarial_direction(model, IMAGES)
    torch.manual_seed(7)  # the random start d the function drew
    start = torch.randn(IMAGES.shape, dtype=torch.float64).flatten(1)
    start = start / start.norm(dim=1, keepdim=True)
    for index in range(len(IMAGES)):
        p = model(IMAGES[index:index + 1]).softmax(1).detach()[0]
        # KL(p(x) || p(x + ξd)) = ½ ξ² dᵀ Wᵀ (diag p − p pᵀ) W d + O(ξ³): its gradient in d is along H d
        hessian = weight.t() @ (torch.diag(p) - torch.outer(p, p)) @ weight
        expected = hessian @ start[index]
        expected = expected / expected.norm()
        assert torch.allclose(direction[index].flatten(), expected, atol=1e-4)
        assert float(direction[index].norm()) == pytest.approx(1.0, abs=1e-9)


def test_vat_direction_moves_the_prediction_more_than_a_random_one_of_the_same_norm():
    model = linear_model(1)
    with torch.no_grad():
        clean = model(IMAGES)
    for seed in range(5):
        torch.manual_seed(seed)
        adversarial = virtual_adversarial_loss(model, IMAGES, clean, radius=0.5)
        random = torch.randn(IMAGES.shape, dtype=torch.float64)
        random = 0.5 * random / random.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        assert float(adversarial.detach()) >= float(softmax_kl(clean, model(IMAGES + random)).detach())


def test_vat_loss_is_the_kl_at_radius_along_the_adversarial_direction():
    model = linear_model(2)
    with torch.no_grad():
        clean = model(IMAGES)
    torch.manual_seed(3)
    loss = virtual_adversarial_loss(model, IMAGES, clean, radius=0.7)
    torch.manual_seed(3)
    moved = IMAGES + 0.7 * adversarial_direction(model, IMAGES)
    assert float(loss.detach()) == pytest.approx(float(softmax_kl(clean, model(moved)).detach()), rel=1e-9)
    assert float(loss.detach()) > 1e-4


def test_vat_direction_ignores_autocast():
    """Under bf16 autocast x + ξd would round to x: the power iteration must run in the input's precision."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 4))
    images = IMAGES.float()
    torch.manual_seed(5)
    expected = adversarial_direction(model, images)
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(adversarial_direction(model, images), expected)


def test_vat_is_zero_for_a_constant_model():
    model = linear_model()
    with torch.no_grad():
        model[1].weight.zero_()
    clean = model(IMAGES)
    assert torch.equal(adversarial_direction(model, IMAGES), torch.zeros_like(IMAGES))
    assert float(virtual_adversarial_loss(model, IMAGES, clean, radius=3.5).detach()) == 0.0


# ---------------------------------------------------------------------------------------- adapter


def toy(shift: int) -> DomainDataset:
    data = toy_digits("train", shift, 64)
    return DomainDataset(conform(data.images, 16, 1), data.labels, data.name)


def dirt_t_recipe(**feature):
    options = {"adapter": "dirt_t", "vada_iterations": 4, "dirt_iterations": 4, "teacher_every": 2, **feature}
    return recipe_from_dict(toy_recipe_dict(feature=options, train={"iterations": 4, "batch_size": 16, "log_every": 1}))


def fit(recipe, run_dir, logged: list | None = None):
    torch.manual_seed(0)
    classifier = create_classifier("lenet", 1, 16, 10, 32)
    ctx = Context(run_dir, progress=False, log_every=1)
    if logged is not None:
        ctx.log_scalars = lambda stage, step, scalars: logged.append((stage, scalars))
    try:
        return DirtT(recipe.feature.options, AdapterSetup.from_recipe(recipe)).fit(classifier, toy(0),
                                                                                 toy(60).without_labels(), ctx)
    finally:
        ctx.close()


def test_every_loss_term_enters_the_total_with_its_weight(tmp_path):
    weights = {"source_weight": 0.7, "target_weight": 0.3, "teacher_weight": 0.2}
    logged = []
    fit(dirt_t_recipe(**weights), tmp_path, logged)
    stages = [stage for stage, _ in logged]
    assert stages == ["feature_vada"] * 4 + ["feature_dirt"] * 4
    for stage, s in logged:
        if stage == "feature_vada":  # the domain weight is the reversal coefficient: L_d enters with weight 1
            expected = (s["loss/source_ce"] + s["loss/domain"] + 0.7 * s["loss/source_vat"]
                        + 0.3 * (s["loss/target_entropy"] + s["loss/target_vat"]))
        else:
            expected = 0.3 * (s["loss/target_entropy"] + s["loss/target_vat"]) + 0.2 * s["loss/teacher_kl"]
        assert s["loss/total"] == pytest.approx(expected, rel=1e-5)
        assert s["loss/target_vat"] > 0 and s["loss/target_entropy"] > 0
    assert all(s["loss/teacher_kl"] >= 0 for stage, s in logged if stage == "feature_dirt")


def test_dirt_t_never_reads_a_source_batch_and_replaces_its_teacher(tmp_path, monkeypatch):
    original = BatchStream.__next__

    def no_source(self):
        if self.dataset.name.startswith("toy0"):
            raise AssertionError("a source batch was read")
        return original(self)

    monkeypatch.setattr(BatchStream, "__next__", no_source)
    with pytest.raises(AssertionError, match="a source batch was read"):  # VADA reads the source: the spy works
        fit(dirt_t_recipe(vada_iterations=1), tmp_path / "vada")
    torch.manual_seed(0)
    start = create_classifier("lenet", 1, 16, 10, 32).state_dict()
    adapted = fit(dirt_t_recipe(vada_iterations=0), tmp_path / "dirt")
    assert not torch.equal(adapted.state_dict()["head.weight"], start["head.weight"])  # it trained
    saved = load_checkpoint(tmp_path / "dirt" / "checkpoints" / "feature_dirt.pt")["state"]
    # 4 iterations, teacher_every 2: the teacher was last replaced by the final classifier
    for key, value in adapted.state_dict().items():
        assert torch.equal(saved["teacher"][key], value.cpu()), key


def test_options_name_their_recipe_key():
    for key, value in (("vada_iterations", -1), ("vat_radius", 0.0), ("teacher_every", 0), ("target_weight", -1.0),
                       ("dirt_beta1", 1.0)):
        with pytest.raises(UserError, match=f"feature.{key}"):
            dirt_t_recipe(**{key: value})


def test_pipeline_runs_both_stages_and_reports(tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(Context, "log_scalars", lambda self, stage, step, scalars: logged.append((stage, scalars)))
    recipe = dirt_t_recipe(vada_iterations=6, dirt_iterations=4, discriminator_hidden=[16])
    metrics = run(recipe, tmp_path / "run", progress=False)
    checkpoints = sorted(path.stem for path in (tmp_path / "run" / "checkpoints").glob("*.pt"))
    assert checkpoints == ["feature_dirt", "feature_vada"]
    assert set(metrics["stages"]["wall_time_s"]) >= {"feature_vada", "feature_dirt"}
    # the discriminator's accuracy: the mean over VADA's 6 steps (the window is 100), each step's as logged
    accuracies = [float(scalars["domain/accuracy"]) for stage, scalars in logged if stage == "feature_vada"]
    assert len(accuracies) == 6
    assert metrics["stages"]["feature"]["domain_accuracy"] == round(float(torch.tensor(accuracies).mean()), 4)
