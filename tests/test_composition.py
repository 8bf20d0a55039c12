"""Composition: a pixel stage's translated source feeds the feature stage; labeled target images join
the supervised loss of every method; a pixel adapter without a read side still gets a report."""
from __future__ import annotations

import pytest
import torch

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.base import FeatureAdapter
from da_toolkit.adapters.pixel import PixelAdapter
from da_toolkit.data import DomainDataset
from da_toolkit.errors import UserError
from da_toolkit.pipeline import run
from da_toolkit.recipe import recipe_from_dict
from da_toolkit.report import write_report
from da_toolkit.training.checkpoint import load_checkpoint
from da_toolkit.translate import translate_folder
from conftest import toy_recipe_dict

SEEN: dict = {}


class Inverter:
    def translate(self, dataset: DomainDataset) -> DomainDataset:
        return DomainDataset(255 - dataset.images, dataset.labels, f"{dataset.name}→inverted", dataset.num_classes)


if "test_invert" not in ADAPTERS:
    @ADAPTERS.register("test_invert")
    class InvertPixels(PixelAdapter):
        """Test-only pixel adapter: 'translates' by inverting intensities."""

        def fit(self, source, target, ctx):
            SEEN["pixel_input"] = source
            return Inverter()

    @ADAPTERS.register("test_spy")
    class Spy(FeatureAdapter):
        """Test-only feature adapter: records the source dataset it is given, trains nothing."""

        def fit(self, classifier, source, target, ctx):
            SEEN["feature_source"] = source
            return classifier


def test_the_feature_stage_trains_on_the_translated_source(tmp_path):
    SEEN.clear()
    recipe = recipe_from_dict(toy_recipe_dict(pixel={"adapter": "test_invert"}, feature={"adapter": "test_spy"}))
    run(recipe, tmp_path / "run", progress=False)
    raw, given = SEEN["pixel_input"], SEEN["feature_source"]
    assert given is not raw and given.name.endswith("→inverted")
    assert torch.equal(given.images, 255 - raw.images)
    assert torch.equal(given.labels, raw.labels)  # labels travel with their images


def test_without_a_pixel_stage_the_feature_stage_gets_the_raw_source(tmp_path):
    SEEN.clear()
    run(recipe_from_dict(toy_recipe_dict(feature={"adapter": "test_spy"})), tmp_path / "run", progress=False)
    assert SEEN["feature_source"].name == "toy_source/train" and "pixel_input" not in SEEN


@pytest.mark.parametrize("feature, stages", [
    ({"adapter": "source_only"}, ["feature"]),
    ({"adapter": "dann", "discriminator_hidden": [16]}, ["feature"]),
    ({"adapter": "adda", "adapt_iterations": 10, "discriminator_hidden": [16]}, ["feature_pretrain", "feature_adapt"]),
])
def test_labeled_target_images_join_every_method(feature, stages, tmp_path):
    recipe = recipe_from_dict(toy_recipe_dict(feature=feature, train={"iterations": 10},
                                              data={"target_labels_per_class": 2}))
    run(recipe, tmp_path / "run", progress=False)
    for stage in stages:
        state = load_checkpoint(tmp_path / "run" / "checkpoints" / f"{stage}.pt")["state"]
        drawn = state["labeled_target_stream"]
        assert len(drawn["order"]) == 20  # 2 labeled target images per class, 10 classes
        assert drawn["position"] > 0, stage  # batches of them were drawn


def test_a_pixel_adapter_without_a_read_side_gets_a_report_and_a_clear_translate_error(tmp_path):
    run(recipe_from_dict(toy_recipe_dict(pixel={"adapter": "test_invert"}, train={"iterations": 2})), tmp_path / "run",
        progress=False)
    assert "keeps no translator to show" in write_report(tmp_path / "run", sample=50).read_text()
    with pytest.raises(UserError, match="the test_invert pixel adapter keeps no translator to use"):
        translate_folder(tmp_path / "run", tmp_path, tmp_path / "out")
