"""Known answers for the data contract and the shared classifier training: which target labels
training sees, the seeded subsets, uint8 <-> float, colour -> grey, split seeds, the supervised loss
with labeled target images, the classifier's LR schedule and training mode."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.adapters import source_only
from da_toolkit.adapters.base import SupervisedTraining
from da_toolkit.context import Context
from da_toolkit.data import build_domain, build_domains, synthetic
from da_toolkit.data.base import conform, to_float, to_uint8
from da_toolkit.models import create_classifier
from da_toolkit.recipe import DomainSpec, recipe_from_dict
from da_toolkit.training.schedules import annealed
from conftest import toy_recipe_dict


@pytest.mark.parametrize("k", [0, 2])
def test_training_sees_exactly_k_target_labels_per_class_and_they_are_true(k):
    data = recipe_from_dict(toy_recipe_dict(data={"target_labels_per_class": k})).data
    domains = build_domains(data, seed=0)
    truth = build_domain(data.target, data.image_size, data.channels, seed=0).labels
    shown = domains.target.labels
    labeled = shown != -1
    assert int(labeled.sum()) == 10 * k
    assert torch.equal(shown[labeled], truth[labeled])
    assert torch.bincount(shown[labeled], minlength=10).tolist() == [k] * 10
    assert torch.equal(domains.target.images, build_domain(data.target, 16, 1, seed=0).images)


def test_a_limited_domain_is_a_seeded_subset():
    spec = DomainSpec("toy_target", "train", limit=50)
    first, again, other = (build_domain(spec, 16, 1, seed) for seed in (0, 0, 1))
    assert len(first) == 50 and torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, other.images)  # another seed, another subset


def test_uint8_float_round_trip_and_rounding():
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert to_float(levels).min() == -1 and to_float(levels).max() == 1
    assert torch.equal(to_uint8(to_float(levels)), levels)
    assert to_uint8(torch.tensor([0.999, -0.999, 0.0, 2.0])).tolist() == [255, 0, 128, 255]  # 254.87 -> 255


def test_colour_to_grey_is_the_luminance():
    red, green, blue = (torch.zeros(1, 3, 2, 2, dtype=torch.uint8) for _ in range(3))
    red[:, 0], green[:, 1], blue[:, 2] = 255, 255, 255
    assert [int(conform(x, 2, 1)[0, 0, 0, 0]) for x in (red, green, blue)] == [76, 150, 29]  # 0.299, 0.587, 0.114


def test_syndigits_train_and_test_splits_share_no_image(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "SYNDIGITS_SIZES", {"train": 30, "test": 30})
    synthetic._syndigits.cache_clear()
    try:
        train = synthetic.syndigits("train", tmp_path)
        test = synthetic.syndigits("test", tmp_path)
    finally:
        synthetic._syndigits.cache_clear()
    train_images = {bytes(image.numpy()) for image in train.images}
    assert not any(bytes(image.numpy()) in train_images for image in test.images)


def supervised(tmp_path, k: int, **train):
    recipe = recipe_from_dict(toy_recipe_dict(data={"target_labels_per_class": k}, train=train))
    domains = build_domains(recipe.data, seed=0)
    torch.manual_seed(0)
    classifier = create_classifier("lenet", 1, 16, 10, 32)
    return SupervisedTraining(classifier, domains.source, domains.target, recipe.train,
                              Context(tmp_path, progress=False)), recipe


def test_the_supervised_loss_adds_the_labeled_target_batch(tmp_path):
    """L = CE(source batch) + CE(labeled target batch) when k > 0, CE(source batch) alone when k = 0."""
    training, _ = supervised(tmp_path, 2)
    training.classifier.eval()
    source_images, source_labels = next(copy.deepcopy(training.source))
    labeled_images, labeled_labels = next(copy.deepcopy(training.labeled_target))
    assert (labeled_labels >= 0).all()
    logits = training.classifier(source_images)
    loss, scalars = training.classification_loss(logits, source_labels)
    expected_target = F.cross_entropy(training.classifier(labeled_images), labeled_labels)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, source_labels).item() + expected_target.item(),
                                        rel=1e-6)
    assert scalars["loss/labeled_target_ce"].item() == pytest.approx(expected_target.item(), rel=1e-6)

    without, _ = supervised(tmp_path / "k0", 0)
    without.classifier.eval()
    images, labels = next(copy.deepcopy(without.source))
    logits = without.classifier(images)
    assert without.labeled_target is None
    assert without.classification_loss(logits, labels)[0].item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-6)


def test_the_classifier_lr_follows_its_schedule_step_by_step(tmp_path):
    training, recipe = supervised(tmp_path, 0, iterations=10, lr_schedule="anneal")
    for i in range(4):
        training.supervised_step(i)
        assert training.optimizer.param_groups[0]["lr"] == pytest.approx(recipe.train.lr * annealed((i + 1) / 10))


def test_source_only_trains_in_training_mode(tmp_path, monkeypatch):
    modes = []
    original = SupervisedTraining.supervised_step
    monkeypatch.setattr(SupervisedTraining, "supervised_step",
                        lambda self, i: (modes.append(self.classifier.training), original(self, i))[1])
    recipe = recipe_from_dict(toy_recipe_dict(train={"iterations": 3}))
    domains = build_domains(recipe.data, seed=0)
    classifier = create_classifier("lenet", 1, 16, 10, 32).eval()
    source_only.SourceOnly(recipe.feature.options, AdapterSetup.from_recipe(recipe)).fit(classifier, domains.source, domains.target,
                                                                Context(tmp_path, progress=False))
    assert modes == [True, True, True]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_one_optimiser_over_the_classifier_and_the_extra_modules_with_the_recipe_settings(tmp_path, optimizer):
    recipe = recipe_from_dict(toy_recipe_dict(train={"optimizer": optimizer, "lr": 0.05, "momentum": 0.8,
                                                     "weight_decay": 1e-3}))
    domains = build_domains(recipe.data, seed=0)
    classifier, extra = create_classifier("lenet", 1, 16, 10, 32), torch.nn.Linear(32, 1)
    training = SupervisedTraining(classifier, domains.source, domains.target, recipe.train,
                                  Context(tmp_path, progress=False), extra_modules=(extra,))
    optimised = {id(p) for group in training.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in [*classifier.parameters(), *extra.parameters()]}
    defaults = training.optimizer.defaults
    assert (defaults["lr"], defaults["weight_decay"]) == (0.05, 1e-3)
    if optimizer == "sgd":
        assert isinstance(training.optimizer, torch.optim.SGD) and defaults["momentum"] == 0.8
    else:
        assert isinstance(training.optimizer, torch.optim.Adam)
