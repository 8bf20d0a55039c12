"""The collapse alarm: prediction histograms and the entropy of the mean prediction, no target labels."""
from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from da_toolkit.cli import main
from da_toolkit.data import DomainDataset
from da_toolkit.data.base import UNLABELED
from da_toolkit.evaluate import collapse_check, predict
from da_toolkit.pipeline import run
from da_toolkit.recipe import load_recipe


def coded_images(classes: list[int]) -> DomainDataset:
    """1×2×2 images whose first pixel is 20·c for the class c to be predicted; no labels."""
    images = torch.zeros(len(classes), 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor(classes, dtype=torch.uint8) * 20
    return DomainDataset(images, torch.full((len(classes),), UNLABELED), "coded")


class ReadsTheCode(nn.Module):
    """Predicts class c for an image coded with c (logit 50 for it, 0 for the others)."""

    def forward(self, x):
        code = torch.round((x[:, 0, 0, 0] + 1) * 127.5 / 20).long()
        return 50.0 * nn.functional.one_hot(code, 10).float()


class AlwaysThree(nn.Module):
    """A collapsed classifier: the same logits, favouring class 3, for every image."""

    def __init__(self):
        super().__init__()
        self.logits = torch.tensor([0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])

    def forward(self, x):
        return self.logits.expand(len(x), 10)


BALANCED_SOURCE = torch.arange(100) % 10


def test_a_collapsed_classifier_raises_the_alarm():
    model = AlwaysThree()
    target, test = coded_images(list(range(10)) * 4), coded_images(list(range(10)) * 2)
    result = collapse_check(model, target, test, BALANCED_SOURCE, 0.9, batch_size=7)

    assert result["target_train"]["histogram"] == [0, 0, 0, 40, 0, 0, 0, 0, 0, 0]
    assert result["target_test"]["histogram"] == [0, 0, 0, 20, 0, 0, 0, 0, 0, 0]
    assert (result["target_train"]["top_class"], result["target_train"]["top_share"]) == (3, 1.0)
    p = model.logits.softmax(0)
    entropy = float(-(p * p.log()).sum()) / math.log(10)
    assert result["target_train"]["mean_prediction_entropy"] == pytest.approx(round(entropy, 4), abs=1e-4)
    assert result["target_train"]["effective_classes"] == 1.0
    assert (result["threshold_top_share"], result["threshold_effective_classes"], result["collapsed"]) == \
        (0.55, 5.0, True)
    assert result["message"] == ("the classifier collapsed: on the target train images it predicts class 3 for "
                                 "100.0% and uses 1.0 effective classes (alarm: one class above 55% or fewer than "
                                 "5.0 classes); treat this run as failed, not as the method's result")


def test_a_balanced_classifier_stays_silent():
    target, test = coded_images(list(range(10)) * 4), coded_images(list(range(10)) * 2)
    result = collapse_check(ReadsTheCode(), target, test, BALANCED_SOURCE, 0.9)
    assert result["target_train"]["histogram"] == [4] * 10 and result["target_test"]["histogram"] == [2] * 10
    assert (result["target_train"]["top_share"], result["target_train"]["effective_classes"]) == (0.1, 10.0)
    assert result["target_train"]["mean_prediction_entropy"] == 1.0
    assert (result["collapsed"], result["message"]) == (False, None)
    assert torch.equal(predict(ReadsTheCode(), target), torch.arange(40) % 10)


def test_the_bars_follow_the_source_labels_and_either_split_can_cross_them():
    half = coded_images([0] * 10 + [1] * 10)
    mostly_one = coded_images([1] * 17 + [0] * 3)  # 85% in class 1
    source = torch.tensor([0] * 40 + [1] * 60 + [UNLABELED] * 50)  # two classes, 40% / 60% of the labeled images
    result = collapse_check(ReadsTheCode(), half, mostly_one, source, 0.9)
    assert (result["threshold_top_share"], result["threshold_effective_classes"]) == (0.8, 0.98)  # (1 + 0.6) / 2
    assert (result["target_train"]["effective_classes"], result["collapsed"]) == (2.0, True)
    assert "on the target test images it predicts class 1 for 85.0%" in result["message"]
    result = collapse_check(ReadsTheCode(), half, coded_images([1] * 16 + [0] * 4), source, 0.9)
    assert (result["target_test"]["top_share"], result["collapsed"]) == (0.8, False)  # not above the bar

    # ten balanced source classes: three classes used evenly is a collapse, six is not
    three, six = coded_images([0, 1, 2] * 10), coded_images([0, 1, 2, 3, 4, 5] * 5)
    result = collapse_check(ReadsTheCode(), six, three, BALANCED_SOURCE, 0.9)
    assert (result["target_test"]["top_share"], result["target_test"]["effective_classes"]) == (0.3333, 3.0)
    assert result["collapsed"] and "on the target test images" in result["message"]
    assert collapse_check(ReadsTheCode(), six, six, BALANCED_SOURCE, 0.9)["collapsed"] is False


def test_a_classifier_that_did_not_learn_its_source_raises_the_alarm_whatever_it_predicts():
    target = coded_images(list(range(10)) * 4)
    assert collapse_check(ReadsTheCode(), target, target, BALANCED_SOURCE, 0.2)["collapsed"] is False  # 2 × chance
    result = collapse_check(ReadsTheCode(), target, target, BALANCED_SOURCE, 0.1548)
    assert (result["threshold_source_accuracy"], result["collapsed"]) == (0.2, True)
    assert result["message"] == ("the classifier collapsed: its accuracy on the labeled source test images is 15.5%, "
                                 "below twice chance (20%); treat this run as failed, not as the method's result")
    two = DomainDataset(coded_images([0, 1] * 4).images, torch.full((8,), UNLABELED), "two", num_classes=2)
    two_source = torch.tensor([0, 1] * 10)
    assert collapse_check(ReadsTheCode(), two, two, two_source, 0.9)["collapsed"] is False  # 2 × chance is 100%
    result = collapse_check(ReadsTheCode(), two, two, two_source, 0.7)
    assert (result["threshold_source_accuracy"], result["collapsed"]) == (0.75, True)
    assert "source test images is 70.0%, below halfway from chance to 100% (75%)" in result["message"]
    result = collapse_check(AlwaysThree(), target, target, BALANCED_SOURCE, 0.1)
    assert result["message"] == ("the classifier collapsed: on the target train images it predicts class 3 for "
                                 "100.0% and uses 1.0 effective classes (alarm: one class above 55% or fewer than "
                                 "5.0 classes); its accuracy on the labeled source test images is 10.0%, below twice "
                                 "chance (20%); treat this run as failed, not as the method's result")


def test_every_run_records_the_alarm_and_show_marks_a_collapsed_run(write_recipe, tmp_path):
    """Three iterations leave the toy classifier predicting one class; 120 train it (79% accuracy)."""
    for name, iterations in (("short", 3), ("trained", 120)):
        run(load_recipe(write_recipe(), [f"train.iterations={iterations}"]), tmp_path / name, progress=False)
    short, trained = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("short", "trained"))
    for metrics in (short, trained):
        for split in ("target_train", "target_test"):
            assert sum(metrics["collapse"][split]["histogram"]) == 400
    assert short["collapse"]["collapsed"] is True
    assert trained["collapse"]["collapsed"] is False and trained["target_accuracy"] > 0.7

    result = CliRunner().invoke(main, ["show", str(tmp_path / "trained"), str(tmp_path / "short")])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[1].endswith("s") and lines[2].endswith("s  COLLAPSED")
    assert lines[5] == f"COLLAPSED: {tmp_path / 'short'}: {short['collapse']['message']}"
    assert "not considered, collapse alarm:" in lines[7]  # then the pick (test_selection.py)
