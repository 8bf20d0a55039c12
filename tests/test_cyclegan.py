"""CycleGAN: networks, losses, image pool, LR policies, training step, translation cache, resume, CLI."""
from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.adapters.cyclegan import CycleGAN, CycleGANOptions
from da_toolkit.adapters.cyclegan.training import CycleGANTraining, lr_lambda
from da_toolkit.translate import translate_folder
from da_toolkit.cli import main
from da_toolkit.context import Context
from da_toolkit.data import DomainDataset
from da_toolkit.data.base import conform
from da_toolkit.errors import UserError
from da_toolkit.models import PatchDiscriminator, ResnetGenerator
from da_toolkit.pipeline import run
from da_toolkit.recipe import load_recipe, recipe_from_dict
from da_toolkit.training.checkpoint import load_checkpoint
from da_toolkit.training.gan_losses import GANLoss, cycle_consistency_loss, identity_loss, semantic_consistency_loss
from da_toolkit.training.image_pool import ImagePool
from da_toolkit.training.loop import Interrupted
from conftest import toy_digits, toy_recipe_dict

TINY = {"adapter": "cyclegan", "iterations": 6, "batch_size": 4, "ngf": 4, "ndf": 4, "generator_blocks": 1,
        "discriminator_layers": 2, "pool_size": 3, "image_grid_every": 3, "translate_batch_size": 64,
        "label_preservation_iterations": 30, "semantic_classifier_iterations": 50}



def tiny_options(**changes) -> CycleGANOptions:
    return CycleGANOptions(**{**{k: v for k, v in TINY.items() if k != "adapter"}, **changes})


def toy(shift: int, count: int) -> DomainDataset:
    """A toy domain at the toy recipe's 16×16 (the PatchGAN with 2 layers needs at least 12 px)."""
    data = toy_digits("train", shift, count)
    return DomainDataset(conform(data.images, 16, 1), data.labels, data.name)


def toy_pixel_recipe(**pixel):
    return recipe_from_dict(toy_recipe_dict(pixel={**TINY, **pixel}, train={"iterations": 30}))


# ---------------------------------------------------------------------------------------------- losses


def test_gan_loss_targets():
    prediction = torch.tensor([[0.5, 1.0], [0.0, 2.0]])
    lsgan = GANLoss("lsgan")
    assert lsgan(prediction, True).item() == pytest.approx((0.25 + 0 + 1 + 1) / 4)  # mean (D - 1)^2
    assert lsgan(prediction, False).item() == pytest.approx((0.25 + 1 + 0 + 4) / 4)  # mean D^2
    vanilla = GANLoss("vanilla")
    assert vanilla(torch.zeros(3), True).item() == pytest.approx(math.log(2))
    assert vanilla(torch.tensor([2.0]), True).item() == pytest.approx(-math.log(1 / (1 + math.exp(-2))))
    assert vanilla(torch.tensor([2.0]), False).item() == pytest.approx(-math.log(1 - 1 / (1 + math.exp(-2))))


def test_cycle_and_identity_losses_are_weighted_l1():
    real = torch.full((2, 1, 4, 4), 0.5)
    assert cycle_consistency_loss(torch.zeros_like(real), real, 10.0).item() == pytest.approx(5.0)
    assert cycle_consistency_loss(real.clone(), real, 10.0).item() == 0.0
    mapped = real + torch.tensor([0.2, -0.2]).view(2, 1, 1, 1)  # |difference| 0.2 everywhere
    assert identity_loss(mapped, real, 10.0, 0.5).item() == pytest.approx(0.5 * 10 * 0.2)  # λ_idt·λ·‖G(b) − b‖₁
    assert identity_loss(mapped, real, 4.0, 0.5).item() == pytest.approx(0.5 * 4 * 0.2)
    assert identity_loss(mapped, real, 10.0, 0.0).item() == 0.0


def test_semantic_loss_uses_labels_and_own_predictions_and_trains_only_the_images():
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).requires_grad_(False)
    fake_b = torch.randn(5, 1, 2, 2, requires_grad=True)
    fake_a, real_b = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    labels = torch.tensor([0, 1, 2, 0, 1])
    loss = semantic_consistency_loss(classifier, fake_b, labels, fake_a, real_b)
    expected = (nn.functional.cross_entropy(classifier(fake_b), labels)
                + nn.functional.cross_entropy(classifier(fake_a), classifier(real_b).argmax(1)))
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert fake_b.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- pool


def test_image_pool_fills_then_returns_a_stored_image_half_of_the_time():
    assert torch.equal(ImagePool(0).query(torch.ones(3, 1, 2, 2)), torch.ones(3, 1, 2, 2))
    pool = ImagePool(4, seed=0)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first) and len(pool) == 4  # filling: images pass through

    stored_returned = 0
    for value in range(100, 1100):
        image = torch.full((1, 1, 1, 1), float(value))
        pool_before = {float(x) for x in pool.images}
        out = float(pool.query(image))
        if out != value:
            assert out in pool_before  # a stored image comes back, and the new one took its place
            assert value in {float(x) for x in pool.images}
            stored_returned += 1
        assert len(pool) == 4
    assert 450 < stored_returned < 550  # probability ½; the exact draws are pinned in test_cyclegan_formulas.py


def test_image_pool_state_round_trip():
    pool = ImagePool(3, seed=7)
    pool.query(torch.randn(5, 1, 2, 2))
    copy = ImagePool(3, seed=99)
    copy.load_state_dict(pool.state_dict())
    batch = torch.randn(6, 1, 2, 2)
    assert torch.equal(pool.query(batch), copy.query(batch))


# ---------------------------------------------------------------------------------------------- schedules


def test_lr_policies_at_start_middle_and_end():
    linear = lr_lambda("linear", 100, 0.5)
    assert [linear(i) for i in (0, 50, 75, 100)] == [1.0, 1.0, 0.5, 0.0]
    step = lr_lambda("step", 100, 0.5)
    assert [step(i) for i in (0, 49)] == [1.0, 1.0] and step(50) == pytest.approx(0.1)
    cosine = lr_lambda("cosine", 100, 0.5)
    assert cosine(0) == 1.0 and cosine(50) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------- networks


@pytest.mark.parametrize("size,patches", [(28, 1), (32, 2)])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_and_patchgan_shapes_and_range(size, patches, channels):
    x = torch.rand(2, channels, size, size) * 2 - 1
    generator = ResnetGenerator(channels, channels, ngf=8, n_blocks=2)
    y = generator(x)
    assert y.shape == x.shape and y.abs().max() <= 1.0
    discriminator = PatchDiscriminator(channels, ndf=8, n_layers=3)
    assert discriminator(y).shape == (2, 1, patches, patches)
    assert PatchDiscriminator.output_size(size, 3) == patches
    weights = generator.model[1].weight
    assert abs(weights.std().item() - 0.02) < 0.005 and abs(weights.mean().item()) < 0.005  # N(0, 0.02)


def test_batch_norm_variant_and_bias_rule():
    generator = ResnetGenerator(1, 1, ngf=4, n_blocks=1, norm="batch")
    assert any(isinstance(m, nn.BatchNorm2d) for m in generator.modules())
    assert generator.model[1].bias is None  # conv before a batch norm has no bias
    assert ResnetGenerator(1, 1, ngf=4, n_blocks=1).model[1].bias is not None


# ---------------------------------------------------------------------------------------------- training


def test_a_few_steps_on_a_fixed_batch_reduce_the_cycle_loss(tmp_path):
    torch.manual_seed(0)
    source = toy(0, 8)
    target = toy(60, 8)
    ctx = Context(tmp_path, progress=False)
    training = CycleGANTraining(tiny_options(iterations=25, batch_size=8, ngf=8, lr=2e-3), source, target, ctx)
    losses = [training.step(i) for i in range(25)]
    cycle = [float(s["loss/cycle_a"] + s["loss/cycle_b"]) for s in losses]
    assert sum(cycle[-3:]) / 3 < 0.5 * sum(cycle[:3]) / 3
    assert {"loss/identity_a", "loss/identity_b", "loss/D_a", "D_output/fake_b", "lr"} <= set(losses[0])
    assert not any(p.grad is None for p in training.d_a.parameters())  # the D step trained D
    assert len(training.pool_a) == 3


def test_identity_passes_skipped_when_weight_is_zero(tmp_path, monkeypatch):
    source, target = toy(0, 8), toy(60, 8)
    training = CycleGANTraining(tiny_options(lambda_identity=0.0), source, target, Context(tmp_path, progress=False))
    calls = []
    training.g_ab.register_forward_hook(lambda *args: calls.append(1))
    scalars = training.step(0)
    assert "loss/identity_b" not in scalars and len(calls) == 2  # G(a) and G(F(b)) only


def test_options_are_checked(tmp_path):
    with pytest.raises(UserError, match=r"pixel.pool_size: must be zero or more, got -1"):
        recipe_from_dict(toy_recipe_dict(pixel={"adapter": "cyclegan", "pool_size": -1}))
    with pytest.raises(UserError, match=r"pixel.norm: expected one of: instance, batch"):
        recipe_from_dict(toy_recipe_dict(pixel={"adapter": "cyclegan", "norm": "layer"}))
    with pytest.raises(UserError, match="3 layers need images of at least 24 px, but data.image_size is 16"):
        toy_pixel_recipe(discriminator_layers=3)  # checked when the recipe is validated


def test_semantic_loss_trains_a_frozen_source_classifier_first(tmp_path):
    recipe = toy_pixel_recipe(iterations=2, semantic_weight=1.0, semantic_classifier_iterations=5)
    ctx = Context(tmp_path, progress=False)
    source = toy(0, 40)
    CycleGAN(recipe.pixel.options, AdapterSetup.from_recipe(recipe)).fit(source, toy(60, 40), ctx)
    assert load_checkpoint(tmp_path / "checkpoints" / "pixel_classifier.pt")["iteration"] == 5
    assert load_checkpoint(tmp_path / "checkpoints" / "pixel.pt")["iteration"] == 2


def test_interrupted_pixel_stage_resumes_at_its_checkpoint(tmp_path, monkeypatch):
    recipe = toy_pixel_recipe(iterations=8, semantic_classifier_iterations=6)  # f_S: a few steps are enough here
    source, target = toy(0, 40), toy(60, 40)

    def fit(run_dir, resume=False):
        torch.manual_seed(0)
        ctx = Context(tmp_path / run_dir, progress=False, checkpoint_every=2, resume=resume)
        return CycleGAN(recipe.pixel.options, AdapterSetup.from_recipe(recipe)).fit(source, target, ctx)

    straight = fit("straight")
    original_step = CycleGANTraining.step
    seen = []

    def step_then_ctrl_c(self, iteration):
        seen.append(iteration)
        scalars = original_step(self, iteration)
        if iteration == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return scalars

    monkeypatch.setattr(CycleGANTraining, "step", step_then_ctrl_c)
    with pytest.raises(Interrupted, match="stopped at iteration 5 of 8"):
        fit("resumed")
    saved = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "pixel.pt")
    assert saved["iteration"] == 5 and len(saved["state"]["pool_a"]["images"]) == 3
    seen.clear()
    resumed = fit("resumed", resume=True)
    assert seen == [5, 6, 7]  # continued, did not start over
    for key, value in straight.generator.state_dict().items():
        assert torch.equal(value, resumed.generator.state_dict()[key]), key


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    """A toy run: cyclegan pixel stage + source_only feature stage."""
    run_dir = tmp_path_factory.mktemp("pixel_run") / "run"
    metrics = run(toy_pixel_recipe(), run_dir, progress=False)
    return run_dir, metrics


def test_pipeline_with_pixel_stage_records_label_preservation(pixel_run):
    run_dir, metrics = pixel_run
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["pixel_adapter"] == "cyclegan" and saved["target_accuracy"] == metrics["target_accuracy"]
    preservation = saved["label_preservation"]
    # after 6 CycleGAN iterations the rate is whatever it is; its known answers are in test_translation.py
    assert 0 <= preservation["rate"] <= 1 and preservation["oracle_on_raw_source"] > 0.2  # chance is 0.1
    assert "diagnostic only" in preservation["note"]
    assert saved["stages"]["pixel"]["translation_cache"] == "miss"
    assert len(list((run_dir / "cache").glob("translated_*/index.json"))) == 1
    assert "target-trained oracle" in (run_dir / "log.txt").read_text()
    event_file = next((run_dir / "tensorboard").glob("events.out.tfevents.*")).read_bytes()
    assert b"pixel/a2b" in event_file and b"pixel/loss/cycle_a" in event_file


def test_second_run_sharing_the_pixel_stage_hits_the_translation_cache(pixel_run, tmp_path):
    run_dir, _ = pixel_run
    recipe = toy_pixel_recipe()
    recipe.pixel_from = str(run_dir)
    metrics = run(recipe, tmp_path / "second", progress=False)
    assert metrics["stages"]["pixel"]["translation_cache"] == "hit"
    assert "pixel" not in metrics["stages"].get("wall_time_s", {})  # not trained again
    assert "read from the cache" in (tmp_path / "second" / "log.txt").read_text()


def test_translate_folder_keeps_relative_paths_and_conforms_images(pixel_run, tmp_path):
    run_dir, _ = pixel_run
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    Image.new("L", (8, 8), 40).save(source / "sub" / "x.png")
    Image.new("RGB", (20, 20), (200, 10, 10)).save(source / "y.jpg")
    (source / "notes.txt").write_text("not an image")
    assert translate_folder(run_dir, source, tmp_path / "out", "b2a", 1) == 2
    for name in ("sub/x.png", "y.png"):
        with Image.open(tmp_path / "out" / name) as image:
            assert image.size == (16, 16) and image.mode == "L"

    result = CliRunner().invoke(main, ["translate", str(run_dir), "--input", str(source), "--output",
                                       str(tmp_path / "cli")])
    assert result.exit_code == 0 and "translated 2 images (a2b)" in result.output
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        translate_folder(run_dir, tmp_path / "empty", tmp_path / "out")


def test_translate_folder_needs_a_pixel_stage(write_recipe, tmp_path):
    run(load_recipe(write_recipe(), ["train.iterations=2"]), tmp_path / "plain", progress=False)
    with pytest.raises(UserError, match="has no pixel stage"):
        translate_folder(tmp_path / "plain", tmp_path, tmp_path / "out")
    with pytest.raises(UserError, match="no recipe.yaml here"):
        translate_folder(tmp_path / "missing", tmp_path, tmp_path / "out")


def test_translated_dataset_keeps_labels(tmp_path):
    source, target = toy(0, 12), toy(60, 12)
    recipe = toy_pixel_recipe(iterations=1, feature_data="translated", label_filter="off")  # the translation alone
    translator = CycleGAN(recipe.pixel.options, AdapterSetup.from_recipe(recipe)).fit(source, target, Context(tmp_path, progress=False))
    translated = translator.translate(DomainDataset(source.images, source.labels, "toy"))
    assert translated.name == "toy→cyclegan" and torch.equal(translated.labels, source.labels)
    assert translated.images.dtype == torch.uint8 and translated.images.shape == source.images.shape
