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
from da_toolkit.evaluate import collapse_check, predict, prediction_statistics
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
    result = collapse_check(model, target, test, BALANCED_SOURCE, batch_size=7)

    assert result["target_train"]["histogram"] == [0, 0, 0, 40, 0, 0, 0, 0, 0, 0]
    assert result["target_test"]["histogram"] == [0, 0, 0, 20, 0, 0, 0, 0, 0, 0]
    assert (result["target_train"]["top_class"], result["target_train"]["top_share"]) == (3, 1.0)
    p = model.logits.softmax(0)
    entropy = float(-(p * p.log()).sum()) / math.log(10)
    assert result["target_train"]["mean_prediction_entropy"] == pytest.approx(round(entropy, 4), abs=1e-4)
    assert result["threshold_top_share"] == 0.55 and result["collapsed"] is True
    assert result["message"].startswith("the classifier collapsed: it puts 100.0% of the target train images in "
                                        "class 3 (alarm above 55%;")


def test_a_balanced_classifier_stays_silent():
    target, test = coded_images(list(range(10)) * 4), coded_images(list(range(10)) * 2)
    result = collapse_check(ReadsTheCode(), target, test, BALANCED_SOURCE)
    assert result["target_train"]["histogram"] == [4] * 10 and result["target_test"]["histogram"] == [2] * 10
    assert result["target_train"]["top_share"] == 0.1
    assert result["target_train"]["mean_prediction_entropy"] == 1.0
    assert (result["collapsed"], result["message"]) == (False, None)
    assert torch.equal(predict(ReadsTheCode(), target), torch.arange(40) % 10)


def test_the_bar_follows_an_unbalanced_source_and_either_split_can_cross_it():
    half = coded_images([0] * 10 + [1] * 10)
    mostly_one = coded_images([1] * 17 + [0] * 3)  # 85% in class 1
    assert prediction_statistics(ReadsTheCode(), half)["top_share"] == 0.5
    source = torch.tensor([0] * 40 + [1] * 60 + [UNLABELED] * 50)  # 40% / 60% of the labeled images
    result = collapse_check(ReadsTheCode(), half, mostly_one, source)
    assert (result["threshold_top_share"], result["collapsed"]) == (0.8, True)  # (1 + 0.6) / 2
    result = collapse_check(ReadsTheCode(), half, coded_images([1] * 16 + [0] * 4), source)
    assert (result["target_test"]["top_share"], result["collapsed"]) == (0.8, False)  # not above the bar
    result = collapse_check(ReadsTheCode(), half, mostly_one, BALANCED_SOURCE)
    assert (result["threshold_top_share"], result["collapsed"]) == (0.55, True)
    assert "85.0% of the target test images in class 1" in result["message"]


def test_every_run_records_the_alarm_and_show_marks_a_collapsed_run(write_recipe, tmp_path):
    """Three iterations leave the toy classifier predicting one class; sixty train it."""
    for name, iterations in (("short", 3), ("trained", 60)):
        run(load_recipe(write_recipe(), [f"train.iterations={iterations}"]), tmp_path / name, progress=False)
    short, trained = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("short", "trained"))
    for metrics in (short, trained):
        for split in ("target_train", "target_test"):
            assert sum(metrics["collapse"][split]["histogram"]) == 400
    assert short["collapse"]["collapsed"] is True and short["collapse"]["target_train"]["top_share"] > 0.55
    assert trained["collapse"]["collapsed"] is False and trained["target_accuracy"] > 0.3  # 43.5% (chance 10%)

    result = CliRunner().invoke(main, ["show", str(tmp_path / "trained"), str(tmp_path / "short")])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[1].endswith("s") and lines[2].endswith("s  COLLAPSED")
    assert lines[-1] == f"COLLAPSED: {tmp_path / 'short'}: {short['collapse']['message']}"
