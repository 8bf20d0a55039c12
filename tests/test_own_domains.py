"""The own-domains recipes (recipes/own_domains_*.yaml) on a tiny generated pair of image folders,
with timm's tiny `test_resnet` from a local weights file in place of resnet50."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from click.testing import CliRunner
from PIL import Image

from da_toolkit.cli import main
from da_toolkit.errors import UserError
from da_toolkit.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CLASSES = ("left", "right")


def write_domain(root: Path, background: tuple[int, int, int], per_split: dict[str, int]) -> Path:
    """root/<split>/<class>/*.jpg: a bright square on the left or the right of a coloured background."""
    generator = torch.Generator().manual_seed(sum(background))
    for split, count in per_split.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                noise = torch.randint(-20, 21, (24, 24, 3), generator=generator)
                image = (torch.tensor(background).view(1, 1, 3) + noise).clamp(0, 255)
                x = 2 if label == 0 else 14
                image[8:16, x:x + 8] = 250
                Image.fromarray(image.to(torch.uint8).numpy()).save(folder / f"{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def own_domains(tmp_path_factory) -> dict[str, str]:
    """Two generated domains (2 classes × 8 train + 4 test JPEGs each) and a test_resnet weights file."""
    base = tmp_path_factory.mktemp("own")
    source = write_domain(base / "studio", (40, 40, 40), {"train": 8, "test": 4})
    target = write_domain(base / "street", (90, 60, 160), {"train": 8, "test": 4})
    torch.manual_seed(0)
    torch.save(timm.create_model("test_resnet", num_classes=10).state_dict(), base / "test_resnet.pth")
    return {"source": str(source), "target": str(target), "weights": str(base / "test_resnet.pth")}


def tiny(own_domains: dict[str, str]) -> list[str]:
    """The README's command-line overrides, made tiny: test_resnet from a file, 32 px, a few iterations."""
    return [f"data.source.root={own_domains['source']}", f"data.target.root={own_domains['target']}",
            "classifier.backbone=test_resnet", f"classifier.checkpoint={own_domains['weights']}",
            "classifier.bottleneck_dim=16", "data.image_size=32", "train.iterations=3", "train.batch_size=4",
            "train.eval_batch_size=8", "train.device=cpu", "train.log_every=1"]


@pytest.mark.parametrize("method", ["dann", "adda", "cyclegan"])
def test_own_domain_recipes_take_two_folders_from_the_command_line(own_domains, method):
    recipe = load_recipe(RECIPES / f"own_domains_{method}.yaml", tiny(own_domains))
    assert (recipe.data.source.root, recipe.data.source_test.root) == (own_domains["source"],) * 2
    assert (recipe.data.target.root, recipe.data.target_test.root) == (own_domains["target"],) * 2
    assert recipe.classifier.pretrained and recipe.classifier.backbone_lr_multiplier == 0.1
    assert recipe.train.augment.hflip and recipe.train.augment.random_resized_crop == 0.5
    full = load_recipe(RECIPES / f"own_domains_{method}.yaml", tiny(own_domains)[:2])
    assert (full.classifier.backbone, full.data.image_size) == ("resnet50", 224)


def test_a_forgotten_folder_is_one_line_naming_the_key():
    with pytest.raises(UserError, match=r"data.source.root: missing: an imagefolder domain needs its folder .* "
                                        r"\(data.source.root=PATH on the command line"):
        load_recipe(RECIPES / "own_domains_dann.yaml")


TINY_METHOD = {
    "dann": ["feature.discriminator_hidden=[16]"],
    "adda": ["feature.discriminator_hidden=[16]", "feature.adapt_iterations=2"],
    "cyclegan": ["pixel.iterations=2", "pixel.batch_size=2", "pixel.ngf=4", "pixel.ndf=4", "pixel.generator_blocks=1",
                 "pixel.pool_size=2", "pixel.semantic_classifier_iterations=2", "pixel.image_grid_every=0",
                 "pixel.label_preservation_iterations=2"],
}


@pytest.mark.parametrize("method", ["dann", "adda", "cyclegan"])
def test_each_method_on_two_generated_folders_then_evaluate(own_domains, tmp_path, method):
    """The README's command on generated folders: the run finishes, and `evaluate` of the run
    directory (the classifier rebuilt without fetching weights) gives the accuracy it reported."""
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(RECIPES / f"own_domains_{method}.yaml"), *tiny(own_domains),
                                       *TINY_METHOD[method], "-o", str(run), "-q"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["target"]["images"] == 8
    result = CliRunner().invoke(main, ["evaluate", str(run), "--dataset", "imagefolder", "--root",
                                       own_domains["target"]])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"accuracy {100 * metrics['target_accuracy']:.2f}% on imagefolder/test (8 images)")
