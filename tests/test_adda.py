"""ADDA: the frozen source encoder and head stay bit-identical, the target encoder moves, stages resume."""
from __future__ import annotations

import os
import signal

import pytest
import torch

from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.adapters import adda
from da_toolkit.context import Context
from da_toolkit.data import DomainDataset
from da_toolkit.data.base import conform
from da_toolkit.models import create_classifier
from da_toolkit.models.classifier import DomainClassifier
from da_toolkit.pipeline import run
from da_toolkit.recipe import recipe_from_dict
from da_toolkit.training.checkpoint import load_checkpoint
from da_toolkit.training.loop import Interrupted
from conftest import toy_digits, toy_recipe_dict

ADDA = {"adapter": "adda", "pretrain_iterations": 40, "adapt_iterations": 20, "discriminator_hidden": [32, 32]}


def adda_recipe(**feature):
    return recipe_from_dict(toy_recipe_dict(feature={**ADDA, **feature}, train={"checkpoint_every": 10}))


def toy(shift: int) -> DomainDataset:
    """A toy domain at the toy recipe's 16×16."""
    data = toy_digits("train", shift, 120)
    return DomainDataset(conform(data.images, 16, 1), data.labels, data.name)


def fit(recipe, run_dir, resume: bool = False):
    """ADDA on the toy domains; returns (adapted classifier, the source encoder it was adapted from)."""
    torch.manual_seed(0)
    classifier = create_classifier("lenet", 1, 16, 10, 32)
    seen = {}
    original_copy = DomainClassifier.copy_encoder

    def spy_copy(self):
        seen["source_encoder"] = self.encoder
        return original_copy(self)

    ctx = Context(run_dir, progress=False, checkpoint_every=10, resume=resume)
    DomainClassifier.copy_encoder = spy_copy
    try:
        source, target = toy(0), toy(60).without_labels()
        adapted = adda.ADDA(recipe.feature.options, AdapterSetup.from_recipe(recipe)).fit(classifier, source, target, ctx)
    finally:
        DomainClassifier.copy_encoder = original_copy
        ctx.close()
    return adapted, seen["source_encoder"]


def test_source_encoder_and_head_stay_bit_identical_while_the_target_encoder_moves(tmp_path):
    adapted, source_encoder = fit(adda_recipe(), tmp_path)
    pretrained = load_checkpoint(tmp_path / "checkpoints" / "feature_pretrain.pt")["state"]["classifier"]
    for name, value in source_encoder.state_dict().items():  # weights and batch-norm statistics
        assert torch.equal(value, pretrained[f"encoder.{name}"]), name
    for name, value in adapted.head.state_dict().items():
        assert torch.equal(value, pretrained[f"head.{name}"]), name
    assert adapted.encoder is not source_encoder
    moved = [name for name, value in adapted.encoder.state_dict().items()
             if value.is_floating_point() and not torch.equal(value, pretrained[f"encoder.{name}"])]
    assert moved, "the target encoder was not trained"
    assert not any(p.requires_grad for p in adapted.head.parameters())


def test_interrupted_adaptation_resumes_without_pretraining_again(tmp_path, monkeypatch):
    recipe = adda_recipe()
    straight, _ = fit(recipe, tmp_path / "straight")

    original = adda.inverted_label_loss
    calls = {"n": 0}

    def loss_then_ctrl_c(logits):
        calls["n"] += 1
        if calls["n"] == 13:
            os.kill(os.getpid(), signal.SIGINT)
        return original(logits)

    monkeypatch.setattr(adda, "inverted_label_loss", loss_then_ctrl_c)
    with pytest.raises(Interrupted, match="feature_adapt stopped at iteration 13 of 20"):
        fit(recipe, tmp_path / "resumed")
    monkeypatch.setattr(adda, "inverted_label_loss", original)
    pretrain = tmp_path / "resumed" / "checkpoints" / "feature_pretrain.pt"
    written = pretrain.stat().st_mtime_ns

    resumed, _ = fit(recipe, tmp_path / "resumed", resume=True)
    assert pretrain.stat().st_mtime_ns == written  # pre-training restored, not run again
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "feature_adapt.pt")["iteration"] == 20
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_adda_run_reports_domain_accuracy_and_evaluates_with_the_target_encoder(tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(Context, "log_scalars", lambda self, stage, step, scalars: logged.append((stage, scalars)))
    recipe = recipe_from_dict(toy_recipe_dict(feature=ADDA, train={"checkpoint_every": 10, "log_every": 1}))
    metrics = run(recipe, tmp_path / "run", progress=False)
    # the reported figure is the mean of the discriminator's accuracy over the adaptation's steps (all 20 of them:
    # the window is 100), each step's as logged
    accuracies = [float(scalars["domain/accuracy"]) for stage, scalars in logged if stage == "feature_adapt"]
    assert len(accuracies) == 20
    assert metrics["stages"]["feature"]["domain_accuracy"] == round(float(torch.tensor(accuracies).mean()), 4)
    assert set(metrics["stages"]["wall_time_s"]) == {"feature_pretrain", "feature_adapt"}
    assert metrics["target_accuracy"] > 0.3  # chance is 0.1
