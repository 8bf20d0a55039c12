"""End to end on tiny toy domains: a run learns, writes a trustworthy run directory, resumes exactly."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from click.testing import CliRunner

from da_toolkit.adapters.base import SupervisedTraining
from da_toolkit.cli import main
from da_toolkit.errors import UserError
from da_toolkit.pipeline import load_run, run
from da_toolkit.recipe import load_recipe
from da_toolkit.training.checkpoint import load_checkpoint
from da_toolkit.training.loop import Interrupted


def test_source_only_learns_and_fills_the_run_dir(write_recipe, tmp_path):
    metrics = run(load_recipe(write_recipe()), tmp_path / "run", progress=False)
    assert metrics["source_accuracy"] > 0.7
    assert metrics["target_accuracy"] > 0.3  # chance is 0.1
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoints", "classifier.pt", "log.txt", "metrics.json", "recipe.yaml", "tensorboard"]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["target_accuracy"] == metrics["target_accuracy"]
    assert len(saved["target"]["confusion_matrix"]) == 10
    # what data the run saw: a fingerprint of each domain's images and labels
    assert set(saved["data_fingerprints"]) >= {"source", "target", "target_test"}
    rerun = run(load_recipe(write_recipe()), tmp_path / "again", progress=False)
    assert rerun["data_fingerprints"] == saved["data_fingerprints"]
    assert "no target labels" in saved["selection"]
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    recipe, classifier = load_run(tmp_path / "run")
    assert recipe.train.iterations == 60 and not classifier.training


def test_finished_run_is_not_overwritten_silently(write_recipe, tmp_path):
    recipe = load_recipe(write_recipe(), ["train.iterations=2"])
    run(recipe, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "metrics.json").read_bytes()
    with pytest.raises(UserError, match="already holds a finished run"):
        run(recipe, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "metrics.json").read_bytes() == before
    with pytest.raises(UserError, match="recipe differs .* in: train"):
        run(load_recipe(write_recipe(), ["train.iterations=3"]), tmp_path / "run", resume=True, progress=False)
    run(recipe, tmp_path / "run", overwrite=True, progress=False)


def test_interrupted_run_resumes_where_it_stopped(write_recipe, tmp_path, monkeypatch):
    recipe = load_recipe(write_recipe())
    run(recipe, tmp_path / "straight", progress=False)

    original_update = SupervisedTraining.update
    calls = {"n": 0}

    def update_then_ctrl_c(self, loss):
        original_update(self, loss)
        calls["n"] += 1
        if calls["n"] == 25:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(SupervisedTraining, "update", update_then_ctrl_c)
    with pytest.raises(Interrupted):
        run(recipe, tmp_path / "resumed", progress=False)
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "feature.pt")["iteration"] == 25
    monkeypatch.setattr(SupervisedTraining, "update", original_update)

    metrics = run(recipe, tmp_path / "resumed", resume=True, progress=False)
    straight = load_checkpoint(tmp_path / "straight" / "classifier.pt")["state_dict"]
    resumed = load_checkpoint(tmp_path / "resumed" / "classifier.pt")["state_dict"]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert metrics["target_accuracy"] == json.loads((tmp_path / "straight" / "metrics.json").read_text())[
        "target_accuracy"]


def test_labeled_target_images_join_training(write_recipe, tmp_path):
    recipe = load_recipe(write_recipe(), ["data.target_labels_per_class=5", "feature.adapter=target_only"])
    metrics = run(recipe, tmp_path / "run", progress=False)
    assert metrics["target_labels_per_class_used_in_training"] == 5
    assert metrics["target_accuracy"] > 0.5
    with pytest.raises(UserError, match="target_only trains on labeled target images"):
        run(load_recipe(write_recipe(), ["feature.adapter=target_only"]), tmp_path / "run0", progress=False)


def test_cli_run_and_evaluate(write_recipe, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["run", str(write_recipe()), "train.iterations=20", "-q", "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "target accuracy" in result.output and "chance 10%" in result.output
    result = runner.invoke(main, ["evaluate", str(tmp_path / "r"), "--dataset", "toy_source", "--split", "test"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("accuracy ") and "toy_source/test (400 images)" in result.output
    result = runner.invoke(main, ["evaluate", str(tmp_path / "nothing"), "--dataset", "toy_source"])
    assert result.exit_code == 2 and "no recipe.yaml here" in result.output
