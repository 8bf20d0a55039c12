"""The translator and everything built on it, on cases whose answer is known: the translation cache
(hit = exactly the generator's output, retrained = miss), sharing a pixel stage (`pixel_from`), the
label-preservation diagnostic (identity and class-permuting translators), and the CLI commands
`translate --direction`, `evaluate` and `show`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.base import FeatureAdapter
from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.adapters.cyclegan import diagnostics
from da_toolkit.adapters.cyclegan.diagnostics import label_preservation
from da_toolkit.adapters.cyclegan.training import build_generators
from da_toolkit.adapters.cyclegan.translator import CycleGANTranslator
from da_toolkit.adapters.pixel import translate_images
from da_toolkit.cli import main
from da_toolkit.context import Context
from da_toolkit.data import DomainDataset, build_domain
from da_toolkit.data.base import conform
from da_toolkit.models import ResnetGenerator
from da_toolkit.pipeline import run
from da_toolkit.recipe import recipe_from_dict
from da_toolkit.translate import translate_folder
from da_toolkit.training.checkpoint import load_checkpoint
from conftest import toy_digits, toy_recipe_dict

TINY = {"adapter": "cyclegan", "iterations": 2, "batch_size": 4, "ngf": 4, "ndf": 4, "generator_blocks": 1,
        "discriminator_layers": 2, "pool_size": 3, "image_grid_every": 0, "label_preservation_iterations": 0,
        "semantic_weight": 0, "label_filter": "off", "feature_data": "translated"}  # the translation alone
RECEIVED: dict = {}

if "test_record" not in ADAPTERS:
    @ADAPTERS.register("test_record")
    class Record(FeatureAdapter):
        """Test-only feature adapter: records the source dataset it is given, trains nothing."""

        def fit(self, classifier, source, target, ctx):
            RECEIVED["source"] = source
            return classifier


def pixel_recipe(feature=None, **pixel):
    return recipe_from_dict(toy_recipe_dict(pixel={**TINY, **pixel}, feature=feature or {"adapter": "source_only"},
                                            train={"iterations": 2}))


def generator_of(run_dir, direction_key: str = "generator_ab"):
    """The generator a run directory's pixel checkpoint holds, rebuilt like the program does."""
    recipe = pixel_recipe()
    generator = build_generators(recipe.pixel.options, 1, 16)[0]
    generator.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "pixel.pt")["state"][direction_key])
    return generator


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("translation") / "run"
    run(pixel_recipe(), run_dir, progress=False)
    return run_dir


def toy16(shift: int, split: str = "train", count: int = 40) -> DomainDataset:
    data = toy_digits(split, shift, count)
    return DomainDataset(conform(data.images, 16, 1), data.labels, data.name)


# ------------------------------------------------------------------------------------------ cache


def test_cache_hit_is_exactly_the_generators_output_and_a_retrained_generator_misses(tmp_path):
    torch.manual_seed(0)
    generator = ResnetGenerator(1, 1, ngf=4, n_blocks=1)
    ctx = Context(tmp_path, progress=False)
    source = toy16(0)
    options = pixel_recipe(translate_batch_size=16, feature_data="translated", label_filter="off").pixel.options
    translator = CycleGANTranslator(generator, ctx, options)  # the translation alone: no filter, no mix
    first = translator.translate(source)
    assert ctx.metrics["pixel"]["translation_cache"] == "miss"
    assert torch.equal(first.images, translate_images(generator, source.images, torch.device("cpu"), 16))
    again = translator.translate(source)
    assert ctx.metrics["pixel"]["translation_cache"] == "hit" and torch.equal(again.images, first.images)

    with torch.no_grad():  # "retrained": other weights
        generator.model[-2].weight.mul_(-1)
    retrained = translator.translate(source)
    assert ctx.metrics["pixel"]["translation_cache"] == "miss"
    assert torch.equal(retrained.images, translate_images(generator, source.images, torch.device("cpu"), 16))
    assert not torch.equal(retrained.images, first.images)
    other_data = translator.translate(toy16(0, "test"))  # other images: another cache entry
    assert ctx.metrics["pixel"]["translation_cache"] == "miss" and len(other_data) == 40
    assert len(list((tmp_path / "cache").glob("translated_*"))) == 3


def test_translation_runs_the_generator_in_eval_mode():
    torch.manual_seed(0)
    generator = ResnetGenerator(1, 1, ngf=4, n_blocks=1, norm="batch")
    for module in generator.modules():  # running statistics far from a batch's own
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.fill_(0.5)
            module.running_var.fill_(4.0)
    images = toy16(0).images
    out = translate_images(generator, images, torch.device("cpu"), 8)
    assert generator.training  # put back as it was
    with torch.no_grad():
        expected = generator.eval()(images.float() / 127.5 - 1)
    assert torch.equal(out, ((expected.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))


def test_the_run_translates_with_G_and_a_run_sharing_the_stage_gets_that_translation(pixel_run, tmp_path):
    source = build_domain(pixel_recipe().data.source, 16, 1, 0)
    expected = translate_images(generator_of(pixel_run), source.images, torch.device("cpu"), 64)
    [cached] = (pixel_run / "cache").glob("translated_*")
    stored = [np.fromfile(shard, dtype=np.uint8) for shard in sorted(cached.glob("shard_*.u8"))]  # raw uint8 shards
    assert torch.equal(torch.from_numpy(np.concatenate(stored)).view(expected.shape), expected)

    RECEIVED.clear()
    recipe = pixel_recipe(feature={"adapter": "test_record"})
    recipe.pixel_from = str(pixel_run)
    metrics = run(recipe, tmp_path / "sharing", progress=False)
    assert metrics["stages"]["pixel"]["translation_cache"] == "hit"
    assert torch.equal(RECEIVED["source"].images, expected) and torch.equal(RECEIVED["source"].labels, source.labels)
    assert not (tmp_path / "sharing" / "checkpoints" / "pixel.pt").exists()  # nothing trained or written here

    # `translate` on the sharing run uses the shared stage's translator
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(source.images[0, 0].numpy()).save(folder / "x.png")
    assert translate_folder(tmp_path / "sharing", folder, tmp_path / "out") == 1
    assert torch.equal(read_png(tmp_path / "out" / "x.png"), expected[0])


# ------------------------------------------------------------------------------ label preservation


@pytest.fixture(scope="module")
def oracle_case(tmp_path_factory):
    """label_preservation with a 60-iteration oracle, on the toy target test images as 'source'
    (read well by a target-trained oracle), translated by identity and by a class permutation."""
    recipe = pixel_recipe(label_preservation_iterations=60)
    recipe.train.iterations = 60
    images = toy16(60, "test", 400)
    # the translator that permutes classes: each image of class c becomes an image of class c + 1
    by_class = {c: images.images[images.labels == c] for c in range(10)}
    permuted = torch.stack([by_class[(int(c) + 1) % 10][i // 10] for i, c in enumerate(images.labels)])
    results = {}
    for name, translated in (("identity", images), ("permuted", DomainDataset(permuted, images.labels, "p"))):
        ctx = Context(tmp_path_factory.mktemp(name), progress=False)
        torch.manual_seed(0)
        results[name] = label_preservation(AdapterSetup.from_recipe(recipe), 60, images, translated, ctx)
    return results


def test_an_identity_translator_preserves_labels_as_well_as_the_oracle_reads_raw_images(oracle_case):
    result = oracle_case["identity"]
    assert result["rate"] == result["oracle_on_raw_source"]
    assert result["oracle_on_raw_source"] > 0.9  # the oracle reads target-style digits (chance 0.1)
    assert result["oracle_iterations"] == 60


def test_a_class_permuting_translator_scores_near_zero(oracle_case):
    assert oracle_case["permuted"]["rate"] < 0.1
    assert oracle_case["permuted"]["oracle_on_raw_source"] > 0.9


def test_the_oracle_is_trained_on_the_labeled_target_training_split_only(tmp_path, monkeypatch):
    recipe = pixel_recipe(label_preservation_iterations=3)
    trained_on = []
    original = diagnostics.train_classifier
    monkeypatch.setattr(diagnostics, "train_classifier",
                        lambda setup, dataset, ctx, stage, iterations:
                        (trained_on.append((dataset, stage, iterations)), original(setup, dataset, ctx, stage,
                                                                                   iterations))[1])
    source = toy16(0)
    label_preservation(AdapterSetup.from_recipe(recipe), 3, source, source, Context(tmp_path, progress=False))
    [(dataset, stage, iterations)] = trained_on
    target = build_domain(recipe.data.target, 16, 1, recipe.seed)
    assert stage == "pixel_oracle" and iterations == 3
    assert torch.equal(dataset.images, target.images) and torch.equal(dataset.labels, target.labels)


# ------------------------------------------------------------------------------------------- CLI


def read_png(path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image))[None]


def test_translate_direction_a2b_uses_G_and_b2a_uses_F(pixel_run, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pixels = toy16(0, count=3).images
    for index, image in enumerate(pixels):
        Image.fromarray(image[0].numpy()).save(folder / f"{index}.png")
    written = {}
    for direction, key in (("a2b", "generator_ab"), ("b2a", "generator_ba")):
        result = CliRunner().invoke(main, ["translate", str(pixel_run), "--input", str(folder), "--output",
                                           str(tmp_path / direction), "--direction", direction])
        assert result.exit_code == 0 and f"translated 3 images ({direction})" in result.output, result.output
        written[direction] = torch.stack([read_png(tmp_path / direction / f"{i}.png") for i in range(3)])
        expected = translate_images(generator_of(pixel_run, key), pixels, torch.device("cpu"), 64)
        assert torch.equal(written[direction], expected), direction
    assert not torch.equal(written["a2b"], written["b2a"])  # G and F differ, so the check above tells them apart


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_runs")
    run(recipe_from_dict(toy_recipe_dict(train={"iterations": 60})), root / "plain", progress=False)
    run(recipe_from_dict(toy_recipe_dict(train={"iterations": 1}, seed=3)), root / "short", progress=False)
    return root / "plain", root / "short"


def test_evaluate_reproduces_the_runs_target_accuracy(two_runs):
    for run_dir in two_runs:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--dataset", "toy_target", "--split", "test"])
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[0] == (f"accuracy {100 * metrics['target_accuracy']:.2f}% on "
                                                 f"toy_target/test (400 images)")
        per_class = [line.split(": ")[1] for line in result.output.splitlines()[1:]]
        assert per_class == [f"{100 * a:.1f}%" for a in metrics["target"]["per_class_accuracy"]]


def test_show_prints_each_of_its_runs(two_runs):
    accuracies = [json.loads((d / "metrics.json").read_text())["target_accuracy"] for d in two_runs]
    assert accuracies[0] != accuracies[1]  # so that each line must come from its own run
    result = CliRunner().invoke(main, ["show", *map(str, two_runs)])
    assert result.exit_code == 0, result.output
    for run_dir in two_runs:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        [line] = [line for line in result.output.splitlines() if line.startswith(str(run_dir))]
        assert f"{100 * metrics['target_accuracy']:.2f}%" in line and "source_only" in line
        assert f"{100 * metrics['source_accuracy']:.2f}%" in line
