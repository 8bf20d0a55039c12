"""Shared training pieces: schedules, the loop's checkpoint/resume, atomic writes, classifier, evaluation."""
from __future__ import annotations

import math
import os
import signal

import pytest
import timm
import torch
from torch import nn

from da_toolkit.context import Context
from da_toolkit.data import DomainDataset
from da_toolkit.errors import UserError
from da_toolkit.evaluate import evaluate
from da_toolkit.models import create_classifier
from da_toolkit.training import schedules
from da_toolkit.training.checkpoint import load_checkpoint, save_checkpoint
from da_toolkit.training.loop import Interrupted, train_loop


def test_schedule_values():
    assert schedules.annealed(0.0) == 1.0
    assert schedules.annealed(1.0) == pytest.approx(11 ** -0.75)
    assert schedules.grl_coefficient(0.0) == 0.0
    assert schedules.grl_coefficient(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert schedules.cosine(0.0) == 1.0 and schedules.cosine(0.5) == pytest.approx(0.5) and schedules.cosine(1.0) == 0
    assert [schedules.linear_decay(i, 100, 100) for i in (0, 100, 150, 200)] == [1.0, 1.0, 0.5, 0.0]
    assert schedules.step_decay(250, 100, 0.1) == pytest.approx(0.01)


class Counter(nn.Module):
    """A 'model' whose single parameter counts the steps taken, with random noise from the global RNG."""

    def __init__(self):
        super().__init__()
        self.value = nn.Parameter(torch.zeros(()), requires_grad=False)

    def step(self, iteration: int) -> dict:
        self.value += 1 + torch.rand(()) * 1e-3
        return {"value": self.value.detach()}


def test_loop_resumes_exactly_after_ctrl_c(tmp_path):
    reference = Counter()
    torch.manual_seed(0)
    train_loop(Context(tmp_path / "a", progress=False), "stage", 10, reference.step, {"model": reference})

    interrupted = Counter()

    def step_with_ctrl_c(iteration):
        out = interrupted.step(iteration)
        if iteration == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step: the step still finishes
        return out

    torch.manual_seed(0)
    with pytest.raises(Interrupted, match="stopped at iteration 4 of 10"):
        train_loop(Context(tmp_path / "b", progress=False), "stage", 10, step_with_ctrl_c, {"model": interrupted})
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "stage.pt")["iteration"] == 4

    resumed = Counter()
    torch.manual_seed(123)  # the checkpoint's RNG state, not this seed, must drive the remaining steps
    calls = []
    train_loop(Context(tmp_path / "b", resume=True, progress=False), "stage", 10,
               lambda i: (calls.append(i), resumed.step(i))[1], {"model": resumed})
    assert calls == list(range(4, 10))
    assert torch.equal(resumed.value, reference.value)


def test_finished_stage_is_not_run_again_on_resume(tmp_path):
    model = Counter()
    train_loop(Context(tmp_path, progress=False), "stage", 5, model.step, {"model": model})
    again = Counter()
    train_loop(Context(tmp_path, resume=True, progress=False), "stage", 5, again.step, {"model": again})
    assert torch.equal(again.value, model.value)  # loaded, no step taken


def test_atomic_save_leaves_no_partial_file(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    save_checkpoint({"state_dict": 1}, tmp_path / "c.pt", "classifier")
    with pytest.raises(RuntimeError):
        save_checkpoint({"state_dict": Unpicklable()}, tmp_path / "c.pt", "classifier")
    assert load_checkpoint(tmp_path / "c.pt", "classifier")["state_dict"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


@pytest.mark.parametrize("backbone, channels, size", [("lenet", 1, 28), ("dtn", 3, 32), ("resnet10t", 3, 32)])
def test_classifier_shapes(backbone, channels, size):
    model = create_classifier(backbone, channels, size, num_classes=10, bottleneck_dim=64).eval()
    x = torch.randn(4, channels, size, size)
    assert model(x).shape == (4, 10)
    assert model.features(x).shape == (4, 64)
    assert torch.equal(model.head(model.features(x)), model(x))  # eval mode: no dropout masks, fixed statistics
    features, logits = model(x, with_features=True)  # the joint step's one call (training/distributed.py)
    assert torch.equal(features, model.features(x)) and torch.equal(logits, model(x))


def test_digit_backbones_live_in_timms_registry():
    assert timm.is_model("lenet") and timm.is_model("dtn")
    net = timm.create_model("lenet", num_classes=10, in_chans=1)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert net.num_features == 800
    reference = timm.create_model("lenet_fc500", num_classes=0, in_chans=1)  # ADDA's / TLlib's: fc(500) after
    assert reference.num_features == 500 and reference(torch.randn(2, 1, 28, 28)).shape == (2, 500)
    assert [type(m) for m in reference.features[-4:]] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Dropout]
    with pytest.raises(UserError, match="no pretrained weights"):
        create_classifier("lenet", 1, 28, pretrained=True)


def test_evaluate_accuracy_per_class_and_confusion():
    labels = torch.tensor([0, 0, 1, 1, 2])
    images = torch.zeros(5, 1, 1, 1, dtype=torch.uint8)

    class Fixed(nn.Module):
        def forward(self, x):  # predicts 0, 1, 1, 1, 0
            return torch.eye(3)[torch.tensor([0, 1, 1, 1, 0])]

    result = evaluate(Fixed(), DomainDataset(images, labels, "fixed", num_classes=3), batch_size=5)
    assert result["accuracy"] == 0.6
    assert result["per_class_accuracy"] == [0.5, 1.0, 0.0]
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert result["images"] == 5


def test_evaluate_predicts_in_eval_mode_and_restores_the_mode():
    class ModeDependent(nn.Module):
        """Right in eval mode, wrong in training mode (as batch statistics or dropout can make a model)."""

        def forward(self, x):
            labels = torch.tensor([0, 1, 2, 0])
            return torch.eye(3)[(labels + 1) % 3 if self.training else labels]

    model = ModeDependent().train()
    data = DomainDataset(torch.zeros(4, 1, 1, 1, dtype=torch.uint8), torch.tensor([0, 1, 2, 0]), "d", num_classes=3)
    assert evaluate(model, data, batch_size=4)["accuracy"] == 1.0
    assert model.training