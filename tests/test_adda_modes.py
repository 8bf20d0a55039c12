"""ADDA's adaptation compares like with like: the source encoder M_s and the target encoder M_t
run in the same mode (dropout off, batch norm on batch statistics), so that the discriminator
cannot tell the domains apart by dropout noise that only one side has."""
from __future__ import annotations

import torch

from conftest import toy_digits, toy_recipe_dict
from da_toolkit.adapters import adda
from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.context import Context
from da_toolkit.data import DomainDataset
from da_toolkit.data.base import conform
from da_toolkit.models import create_classifier
from da_toolkit.models.classifier import DomainClassifier
from da_toolkit.recipe import recipe_from_dict


def test_source_and_target_encoders_share_one_mode_during_adaptation(tmp_path, monkeypatch):
    torch.manual_seed(0)
    recipe = recipe_from_dict(toy_recipe_dict(
        classifier={"backbone": "dtn", "bottleneck_dim": 16},  # batch norm and dropout in the encoder
        data={"image_size": 16, "channels": 1},
        feature={"adapter": "adda", "pretrain_iterations": 2, "adapt_iterations": 3}, train={"iterations": 2}))
    classifier = create_classifier("dtn", 1, 16, 10, 16)
    made, modes = {}, []
    original_copy, original_loss = DomainClassifier.copy_encoder, adda.inverted_label_loss

    def spy_copy(self):
        made["target_encoder"] = original_copy(self)
        return made["target_encoder"]

    def mode(encoder) -> dict:
        return {kind.__name__: {m.training for m in encoder.modules() if isinstance(m, kind)}
                for kind in (torch.nn.Dropout2d, torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)}

    def spy_loss(logits):  # called once per adaptation step, after both encoders ran
        modes.append((mode(classifier.encoder), mode(made["target_encoder"])))
        return original_loss(logits)

    monkeypatch.setattr(DomainClassifier, "copy_encoder", spy_copy)
    monkeypatch.setattr(adda, "inverted_label_loss", spy_loss)
    source, target = (toy_digits("train", shift, 64) for shift in (0, 60))
    source = DomainDataset(conform(source.images, 16, 1), source.labels, "s")
    target = DomainDataset(conform(target.images, 16, 1), target.labels, "t").without_labels()
    adda.ADDA(recipe.feature.options, AdapterSetup.from_recipe(recipe)).fit(
        classifier, source, target, Context(tmp_path, progress=False))
    expected = {"Dropout2d": {False}, "BatchNorm2d": {True}, "BatchNorm1d": {True}}
    assert modes == [(expected, expected)] * 3  # one mode for M_s and M_t at every adaptation step
