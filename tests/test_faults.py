"""The faults a user met (issue 9), each re-tried: bad input is refused before anything is written,
a failed start does not block its retry, a NaN stops the run, a second Ctrl-C never saves half a
step, wall time adds up over resumes, and --overwrite starts clean."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from click.testing import CliRunner

from da_toolkit.cli import main
from da_toolkit.context import Context
from da_toolkit.training import loop
from da_toolkit.training.checkpoint import load_checkpoint
from da_toolkit.training.loop import Interrupted, train_loop



def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_bad_data_leaves_nothing_and_the_retry_runs(write_recipe, tmp_path):
    missing = tmp_path / "not_there_yet"
    recipe = write_recipe(data={"target": {"name": "imagefolder", "root": str(missing)}})
    run_dir = tmp_path / "run"
    assert "does not exist" in one_line(invoke("run", recipe, "-o", run_dir, "-q"))
    assert not run_dir.exists()
    # a run directory left with only recipe.yaml by an older failed start does not block either
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text("name: toy\n")
    result = invoke("run", write_recipe(train={"iterations": 4}), "-o", run_dir, "-q")
    assert result.exit_code == 0, result.output


def test_an_impossible_image_size_is_refused_before_anything_is_written(write_recipe, tmp_path):
    line = one_line(invoke("run", write_recipe(), "data.image_size=3", "-o", tmp_path / "run"))
    assert "data.image_size: 3 px images" in line and "'lenet' backbone" in line
    assert not (tmp_path / "run").exists()


def test_a_recipe_that_is_not_text_is_one_line(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(b"name: x\n\x89PNG\x00\xff")
    assert f"{path}: not a text (UTF-8) file" in one_line(invoke("run", path))


def test_a_diverging_run_stops_with_one_line_and_no_result(write_recipe, tmp_path):
    run_dir = tmp_path / "run"
    recipe = write_recipe(train={"iterations": 60, "checkpoint_every": 10, "log_every": 10})
    line = one_line(invoke("run", recipe, "train.lr=1e6", "-o", run_dir, "-q"))
    assert "feature: loss/total became nan at iteration 5" in line and "no checkpoint of it was written" in line
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "classifier.pt").exists()


def test_no_checkpoint_holds_a_diverged_state(tmp_path):
    stage = Steps([0.0])

    def step(iteration):
        out = stage.step(iteration)
        return {"loss/count": out["loss/count"] / 0 if iteration == 4 else out["loss/count"]}  # inf at step 5

    ctx = Context(tmp_path, progress=False, checkpoint_every=2, log_every=100)
    with pytest.raises(loop.TrainingDiverged, match=r"stage: loss/count became inf at iteration 5; .*checkpoint \(iteration 4\) is kept"):
        train_loop(ctx, "stage", 10, step, {"stage": stage})
    assert load_checkpoint(tmp_path / "checkpoints" / "stage.pt", "stage")["iteration"] == 4


class Steps:
    """A stage whose state counts its steps; `clock` advances one second per step."""

    def __init__(self, clock: list[float]):
        self.count = torch.zeros(())
        self.clock = clock

    def step(self, iteration: int) -> dict:
        self.count += 1
        self.clock[0] += 1.0
        return {"loss/count": self.count.clone()}

    def state_dict(self) -> dict:
        return {"count": self.count.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.count = state["count"].clone()


def test_a_second_ctrl_c_stops_without_saving_half_a_step(tmp_path):
    stage = Steps([0.0])

    def step(iteration):
        if iteration == 3:  # the second Ctrl-C arrives inside a step
            stage.count += 0.5
            raise KeyboardInterrupt
        return stage.step(iteration)

    ctx = Context(tmp_path, progress=False, checkpoint_every=2)
    with pytest.raises(Interrupted, match=r"second Ctrl-C.*last checkpoint \(iteration 2\) is kept"):
        train_loop(ctx, "stage", 10, step, {"stage": stage})
    saved = load_checkpoint(tmp_path / "checkpoints" / "stage.pt", "stage")
    assert saved["iteration"] == 2 and saved["state"]["stage"]["count"].item() == 2.0


def test_wall_time_accumulates_over_resumes(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(loop.time, "perf_counter", lambda: clock[0])
    first = Steps(clock)

    def stop_after_three(iteration):
        if iteration == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: this step finishes, then the loop saves
        return first.step(iteration)

    with pytest.raises(Interrupted, match="stopped at iteration 3 of 5"):
        train_loop(Context(tmp_path, progress=False), "stage", 5, stop_after_three, {"stage": first})
    ctx, second = Context(tmp_path, progress=False, resume=True), Steps(clock)
    train_loop(ctx, "stage", 5, second.step, {"stage": second})
    assert second.count.item() == 5
    assert ctx.metrics["wall_time_s"]["stage"] == 5.0  # 3 s before the interruption + 2 s after
    assert ctx.earlier_wall_time == 3.0


def test_overwrite_starts_clean(write_recipe, tmp_path):
    recipe, run_dir = write_recipe(train={"iterations": 4}), tmp_path / "run"
    assert invoke("run", recipe, "-o", run_dir, "-q").exit_code == 0
    (run_dir / "cache").mkdir()
    (run_dir / "cache" / "stale.pt").write_bytes(b"old")
    (run_dir / "notes.txt").write_text("mine")
    assert invoke("run", recipe, "-o", run_dir, "-q", "--overwrite").exit_code == 0
    assert (run_dir / "log.txt").read_text().count("run toy:") == 1
    assert len(list((run_dir / "tensorboard").iterdir())) == 1
    assert not (run_dir / "cache").exists() and (run_dir / "notes.txt").read_text() == "mine"
    assert json.loads((run_dir / "metrics.json").read_text())["recipe"] == "toy"


def test_a_run_with_three_classes_is_evaluated_again(tmp_path):
    """classifier.pt records its class count, so `evaluate` rebuilds a 3-class classifier and
    reproduces the run's own target accuracy."""
    from PIL import Image
    import yaml

    for split in ("train", "test"):
        for label, name in enumerate(("circle", "square", "triangle")):
            folder = tmp_path / "shapes" / split / name
            folder.mkdir(parents=True)
            for index in range(6):
                Image.new("L", (8, 8), 40 * label + 5 * index).save(folder / f"{index}.png")
    shapes = {"name": "imagefolder", "root": str(tmp_path / "shapes")}
    recipe = tmp_path / "shapes.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "shapes", "data": {"source": shapes, "target": shapes, "target_test": {**shapes, "split": "test"},
                                   "image_size": 16, "channels": 1},
        "classifier": {"backbone": "lenet", "bottleneck_dim": 8}, "train": {"iterations": 5, "batch_size": 6}}))
    run_dir = tmp_path / "run"
    assert invoke("run", recipe, "-o", run_dir, "-q").exit_code == 0
    expected = json.loads((run_dir / "metrics.json").read_text())["target_accuracy"]
    result = invoke("evaluate", run_dir, "--dataset", "imagefolder", "--root", tmp_path / "shapes")
    assert result.exit_code == 0, result.output
    assert f"accuracy {100 * expected:.2f}% on imagefolder/test (18 images)" in result.output
    assert result.output.count("  class ") == 3 and "class triangle:" in result.output  # by folder name
