"""Exact resume for every stage of every registered method, and the loop's periodic checkpoints.

One test parameterised over the adapter registry: a new method is covered without a new test.
For each method the run is interrupted (Ctrl-C) at an iteration inside each of its stages in turn,
resumed with --resume, and its final weights must be `torch.equal` to those of an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal

import pytest
import torch

from da_toolkit.adapters import ADAPTERS
from da_toolkit.context import Context
from da_toolkit.pipeline import run
from da_toolkit.recipe import recipe_from_dict
from da_toolkit.training.checkpoint import load_checkpoint
from da_toolkit.training.loop import Interrupted, train_loop
from conftest import toy_recipe_dict

ITERATIONS = 6  # of every stage; the interruption comes at iteration INTERRUPT_AT of the stage
INTERRUPT_AT = 3
# small options for the registered adapters (an adapter not listed here runs with its defaults)
SMALL = {
    "dann": {"discriminator_hidden": [16]},
    "adabn": {"passes": ITERATIONS * 16 / 400},  # ITERATIONS batches of 16 of the toy target's 400 images
    "dirt_t": {"vada_iterations": ITERATIONS, "dirt_iterations": ITERATIONS, "teacher_every": 2,
               "discriminator_hidden": [16]},
    "adda": {"pretrain_iterations": ITERATIONS, "adapt_iterations": ITERATIONS, "discriminator_hidden": [16]},
    "cyclegan": {"iterations": ITERATIONS, "batch_size": 4, "ngf": 4, "ndf": 4, "generator_blocks": 1,
                 "discriminator_layers": 2, "pool_size": 3, "image_grid_every": 0, "semantic_weight": 1.0,
                 "semantic_classifier_iterations": ITERATIONS, "label_preservation_iterations": ITERATIONS},
    "shot": {"pseudo_label_every": 2},  # reclusters at iterations 0, 2, 4: a resume at 3 needs the saved labels
    "stargan": {"iterations": ITERATIONS, "batch_size": 4, "n_critic": 2, "ngf": 4, "ndf": 4, "generator_blocks": 1,
                "image_grid_every": 0, "semantic_weight": 1.0, "semantic_classifier_iterations": ITERATIONS,
                "label_preservation_iterations": ITERATIONS},
}
NEEDS_LABELS = {"target_only"}  # trains on the labeled target images only
# (feature adapter, refine adapter) compositions: a refinement stage after a feature stage
REFINEMENTS = [("dann", "source_only"), ("adda", "fixmatch"), ("mcc", "shot")]


def registered(kind: str) -> list[str]:
    return [name for name in ADAPTERS.names() if ADAPTERS.get(name).kind == kind and not name.startswith("test_")]


def cases() -> list[tuple[str | None, str, int, str | None]]:
    """(pixel adapter, feature adapter, labeled target images per class, refine adapter) for every
    registered method; feature methods with and without labeled target images, pixel methods before
    source_only, and the REFINEMENTS compositions."""
    out = []
    for feature in registered("feature"):
        out += [(None, feature, k, None) for k in ((2,) if feature in NEEDS_LABELS else (0, 2))]
    out += [(pixel, "source_only", 0, None) for pixel in registered("pixel")]
    out += [(None, feature, 0, refine) for feature, refine in REFINEMENTS]
    return out


def options_for(adapter: str, source_run=None, stage: str = "feature") -> dict:
    """SMALL's options of `adapter`; a source-free adapter (one with a `source_checkpoint` option) as the
    feature stage also gets the toy source_only run to start from (conftest's toy_source_run); as a refine
    stage it starts from the feature stage's classifier."""
    options = {"adapter": adapter, **SMALL.get(adapter, {})}
    if stage == "feature" and "source_checkpoint" in {f.name for f in dataclasses.fields(ADAPTERS.get(adapter).Options)}:
        options["source_checkpoint"] = str(source_run)
    return options


def recipe_for(pixel: str | None, feature: str, k: int, refine: str | None = None, source_run=None):
    sections = {"feature": options_for(feature, source_run),
                "train": {"iterations": ITERATIONS, "batch_size": 16, "log_every": 1, "checkpoint_every": 1000},
                "data": {"target_labels_per_class": k},
                # model selection by a validator: its candidates and best weights are resumed too
                "selection": {"select": "info_max", "every": 2, "samples": 40}}
    if pixel is not None:
        sections["pixel"] = options_for(pixel, source_run, "pixel")
    if refine is not None:
        sections["refine"] = options_for(refine, source_run, "refine")
    return recipe_from_dict(toy_recipe_dict(**sections))


@pytest.fixture(scope="module")
def straight_runs(tmp_path_factory, toy_source_run):
    """Uninterrupted runs, one per case, made on first use."""
    made = {}

    def get(case):
        if case not in made:
            run_dir = tmp_path_factory.mktemp("straight") / "run"
            run(recipe_for(*case, toy_source_run), run_dir, progress=False)
            made[case] = run_dir
        return made[case]

    return get


def stages_of(run_dir) -> list[str]:
    return sorted(path.stem for path in (run_dir / "checkpoints").glob("*.pt"))


def final_state(run_dir) -> dict:
    """The classifier's weights, and for a pixel stage its networks, optimisers' moments and pools."""
    state = dict(load_checkpoint(run_dir / "classifier.pt")["state_dict"])
    if (run_dir / "checkpoints" / "pixel.pt").exists():
        pixel = load_checkpoint(run_dir / "checkpoints" / "pixel.pt")["state"]
        networks = [key for key in ("generator_ab", "generator_ba", "discriminator_a", "discriminator_b",
                                    "generator", "discriminator") if key in pixel]  # CycleGAN's, StarGAN's
        assert networks, f"no networks known to final_state in the pixel checkpoint: {sorted(pixel)}"
        for key in networks:
            state.update({f"{key}.{name}": value for name, value in pixel[key].items()})
        for key in ("optimizer_g", "optimizer_d"):
            state.update({f"{key}.{index}.{name}": value for index, moments in pixel[key]["state"].items()
                          for name, value in moments.items()})
        if "pool_a" in pixel:
            state["pool_a"] = pixel["pool_a"]["images"]
    return state


def interrupt_in(monkeypatch, stage: str, at: int) -> None:
    """Ctrl-C right after iteration `at` of `stage` (the loop logs every iteration in these recipes)."""
    original = Context.log_scalars

    def log_scalars(self, name, step, scalars):
        original(self, name, step, scalars)
        if name == stage and step == at:
            os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: the loop saves after this step and stops

    monkeypatch.setattr(Context, "log_scalars", log_scalars)


def case_id(case) -> str:
    pixel, feature, k, refine = case
    return "+".join(x for x in (pixel, feature) if x) + (f"+refine_{refine}" if refine else "") + f"-k{k}"


# With labeled target images (k = 2) every method runs in `make test-slow`; the fast suite keeps one method of each
# family that reads them differently (plain cross-entropy, the adversarial family, ADDA's two stages, self-training
# and the source-free start, and the method that needs them).
K2_IN_THE_FAST_SUITE = {"source_only", "dann", "adda", "fixmatch", "shot", "target_only"}


def fast_or_slow(case):
    slow = case[2] == 2 and case[1] not in K2_IN_THE_FAST_SUITE
    return pytest.param(case, marks=pytest.mark.slow) if slow else case


@pytest.mark.parametrize("case", [fast_or_slow(case) for case in cases()], ids=case_id)
def test_every_stage_of_every_method_resumes_exactly(case, straight_runs, toy_source_run, tmp_path, monkeypatch):
    straight = straight_runs(case)
    expected = final_state(straight)
    stages = stages_of(straight)
    assert stages, "the run wrote no stage checkpoints"
    if case[1] == "adda":
        assert stages[:2] == ["feature_adapt", "feature_pretrain"]
    if case[0] == "cyclegan":
        assert stages == ["feature", "pixel", "pixel_classifier", "pixel_oracle"]
    if case[3] is not None:
        assert stages[-1] == "refine", stages
    recipe = recipe_for(*case, source_run=toy_source_run)
    for stage in stages:
        run_dir = tmp_path / stage
        with monkeypatch.context() as patch:
            interrupt_in(patch, stage, INTERRUPT_AT)
            with pytest.raises(Interrupted, match=f"{stage} stopped at iteration {INTERRUPT_AT} of {ITERATIONS}"):
                run(recipe, run_dir, progress=False)
        assert load_checkpoint(run_dir / "checkpoints" / f"{stage}.pt")["iteration"] == INTERRUPT_AT
        metrics = run(recipe, run_dir, resume=True, progress=False)
        resumed = final_state(run_dir)
        assert resumed.keys() == expected.keys()
        differ = [key for key in expected if not torch.equal(expected[key], resumed[key])]
        assert not differ, f"interrupted in {stage}: {differ[:5]}"
        straight_metrics = json.loads((straight / "metrics.json").read_text())
        assert metrics["target_accuracy"] == straight_metrics["target_accuracy"]
        assert metrics["model_selection"]["candidates"] == straight_metrics["model_selection"]["candidates"]
        assert metrics["model_selection"]["chosen"] == straight_metrics["model_selection"]["chosen"]


def test_periodic_checkpoints_survive_a_crash(tmp_path):
    """Every `checkpoint_every` iterations the loop saves, so a crash (no Ctrl-C) loses at most that many."""
    done = []

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.count = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    model = Model()

    def step(iteration):
        if iteration == 7:
            raise RuntimeError("out of memory")
        model.count += 1
        done.append(iteration)
        return {}

    ctx = Context(tmp_path, progress=False, checkpoint_every=3)
    with pytest.raises(RuntimeError):
        train_loop(ctx, "stage", 10, step, {"model": model})
    saved = load_checkpoint(tmp_path / "checkpoints" / "stage.pt")
    assert saved["iteration"] == 6 and saved["state"]["model"]["count"].item() == 6.0
