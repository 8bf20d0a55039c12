"""Every input either runs or is refused in one line (issue 29): the bounds declared on the schema
(`Range` in recipe.py and the adapters' Options), the recipe's relations to its data
(recipe.check_against_data), and each counterexample tests/test_fuzz.py found, as a plain case."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from da_toolkit.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="da-toolkit")


def one_line(result) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]



@pytest.mark.parametrize("override, message", [
    ("data.source.limit=0", "data.source.limit: must be 1 or more (a domain of no images has no batches to draw; "
                            "null: all), got 0"),
    ("seed=-1", "seed: must lie in [0, 4294967295] (numpy's seed range"),
    ("seed=4294967296", "seed: must lie in [0, 4294967295]"),
    ("data.target_labels_per_class=41", "data.target_labels_per_class: must lie in [0, 40] (the target "
                                        "'toy_target/train' has 40 images of class '0', its smallest), got 41"),
    ("train.momentum=-0.5", "train.momentum: must be zero or more, got -0.5"),
    ("train.lr=0", "train.lr: must be positive, got 0"),  # an open bound: 0 itself is refused
    ("train.lr=.nan", "train.lr: expected a number, got nan"),
    # fuzz counterexamples: a traceback (batch norm over one image; an image size torch cannot hold) or a refusal
    # after the pixel stage had written the run directory (target_only without labeled target images)
    ("train.batch_size=1", "train.batch_size: must be 2 or more (batch normalisation normalises over the images of "
                           "a batch), got 1"),
    ("data.target.limit=1", "data.target: the domain 'toy_target/train' holds 1 image(s) (limit 1); it needs at "
                            "least 2 (batch normalisation"),
    ("data.image_size=100000", "data.image_size: must lie in [1, 1024] (pixels per side), got 100000"),
    ("pixel.translate_batch_size=9223372036854775808", "pixel.translate_batch_size: expected an integer of 64 bits "
                                                       "(below 2**63), got 9223372036854775808"),
    ("feature.adapter=target_only", "feature.adapter: target_only trains on labeled target images; set "
                                    "data.target_labels_per_class to 1 or more"),
    ("feature.discriminator_hidden=[0]", "feature.discriminator_hidden[0]: must lie in [1, 65536] (units of a layer), "
                                         "got 0"),
])
def test_a_value_outside_its_declared_range_is_refused_before_anything_is_written(write_recipe, tmp_path, override,
                                                                                   message):
    adapter = ["pixel.adapter=cyclegan"] if "target_only" in override or override.startswith("pixel.") else \
        ["feature.adapter=dann"] if override.startswith("feature.") else []
    line = one_line(invoke("run", write_recipe(), *adapter, override, "-o", tmp_path / "run", "-q"))
    assert line.startswith(f"error: {message}"), line
    assert not (tmp_path / "run").exists()


def test_the_edges_of_the_seed_range_and_of_k_run(write_recipe, tmp_path):
    recipe = write_recipe(train={"iterations": 2, "log_every": 1, "checkpoint_every": 2, "workers": 0})
    result = invoke("run", recipe, "seed=4294967295", "data.target_labels_per_class=40", "data.source.limit=2",
                    "-o", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["seed"] == 2**32 - 1 and metrics["target_labels_per_class_used_in_training"] == 40


def test_a_batch_larger_than_the_data_warns_in_one_line_and_runs(write_recipe, tmp_path):
    recipe = write_recipe(train={"iterations": 2, "log_every": 1, "checkpoint_every": 2, "workers": 0})
    with pytest.warns(UserWarning) as caught:  # the CLI prints each as a `warning: ` line (cli.main)
        result = invoke("run", recipe, "train.batch_size=1000", "-o", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    assert [str(w.message) for w in caught if "batch_size" in str(w.message)] == [
        "train.batch_size: 1000 is more than the images of data.source (toy_source/train, 400 images) and "
        "data.target (toy_target/train, 400 images): each of its batches is the whole domain, in a new order each "
        "iteration"]


def test_an_unreadable_character_in_a_run_directory_recipe_is_one_line(write_recipe, tmp_path):
    """Fuzz counterexample: yaml's ReaderError message spans two lines."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: toy\x07\n")
    line = one_line(invoke("run", recipe))
    assert "is not valid YAML (unacceptable character #x0007" in line


@pytest.mark.parametrize("arguments, message", [
    (["run"], "error: da-toolkit run: Missing argument 'RECIPE'. (see --help)"),
    (["show", "--bogus"], "error: da-toolkit show: No such option '--bogus'. Did you mean '--verbose'? (see --help)"),
    (["run", "x.yaml", "--nproc", "0"], "error: da-toolkit run: Invalid value for '--nproc': 0 is not in the range "
                                        "x>=1. (see --help)"),
    (["--version", "--resume"], "error: da-toolkit: No such option '--resume'. (see --help)"),  # the group's own
    (["run", "\0"], "error: da-toolkit run: Invalid value for 'RECIPE': '\\x00' holds a NUL character, which no file "
                    "name can (see --help)"),  # was a traceback from os.stat inside click.Path
    (["evaluat"], "error: da-toolkit: No such command 'evaluat'. Did you mean 'evaluate'? (see --help)"),
])
def test_a_bad_command_line_is_one_line(arguments, message):
    """Fuzz counterexamples: click printed its usage block (three lines and more) for a bad argument."""
    assert one_line(invoke(*arguments)).startswith(message)


def test_a_nul_character_in_a_path_override_is_refused_in_one_line(write_recipe, tmp_path):
    """Fuzz counterexample: `data.source.root=<NUL>` was resolved as a path: ValueError (embedded null byte)."""
    line = one_line(invoke("run", write_recipe(), "data.source.root=\0", "-o", tmp_path / "run"))
    assert line == "error: data.source.root: expected a string without NUL characters, got '\\x00'"


def test_a_control_character_in_a_file_name_stays_on_its_line(tmp_path):
    """Fuzz counterexample: `run $'\\f'` printed the form feed of the file name raw: two lines."""
    assert one_line(invoke("run", "a\fb\nc.yaml")) == "error: recipe file not found: a\\x0cb\\nc.yaml"


def test_a_resume_that_fails_after_training_leaves_no_classifier(write_recipe, tmp_path):
    """Fuzz counterexample: resuming a pixel run whose oracle checkpoint was emptied saved classifier.pt, then
    failed on the checkpoint: a run directory with a classifier and no metrics. classifier.pt is now written
    with metrics.json, once the diagnostics are done."""
    pixel = {"adapter": "cyclegan", "iterations": 2, "batch_size": 4, "ngf": 4, "ndf": 4, "generator_blocks": 1,
             "semantic_classifier_iterations": 2, "label_preservation_iterations": 2, "image_grid_every": 0}
    recipe = write_recipe(pixel=pixel, train={"iterations": 2, "log_every": 1, "checkpoint_every": 2, "workers": 0})
    run_dir = tmp_path / "run"
    assert invoke("run", recipe, "-o", run_dir, "-q").exit_code == 0
    for done in ("metrics.json", "classifier.pt"):
        (run_dir / done).unlink()
    (run_dir / "checkpoints" / "pixel_oracle.pt").write_bytes(b"")
    line = one_line(invoke("run", recipe, "-o", run_dir, "--resume", "-q"))
    assert "pixel_oracle.pt: not a readable stage checkpoint (empty file)" in line
    assert not (run_dir / "classifier.pt").exists() and not (run_dir / "metrics.json").exists()


def test_a_validator_with_nothing_to_score_is_null_in_strict_json_and_rescores(write_recipe, tmp_path):
    """A fuzz counterexample: a target of 2 images (fewer than the 10 classes) gave class_ami NaN, written as
    `NaN` into metrics.json, which is not JSON. It is null now, and `rescore` reproduces it (a stored null
    equals a rescored NaN)."""
    recipe = write_recipe(train={"iterations": 2, "log_every": 1, "checkpoint_every": 2, "workers": 0})
    run = tmp_path / "run"
    assert invoke("run", recipe, "data.target.limit=2", "-o", run, "-q").exit_code == 0
    candidates = json.loads((run / "metrics.json").read_text(), parse_constant=pytest.fail)[
        "model_selection"]["candidates"]
    assert all(c["scores"]["class_ami"] is None for c in candidates)
    assert all(isinstance(c["scores"]["info_max"], float) for c in candidates)
    scored = json.loads((run / "metrics.json").read_text())
    scored["model_selection"]["candidates"] = [{**c, "scores": {k: v for k, v in c["scores"].items()
                                                               if k != "bnm"}} for c in candidates]
    (run / "metrics.json").write_text(json.dumps(scored))  # as if bnm came after the run: rescore adds it
    result = invoke("rescore", run)
    assert result.exit_code == 0, result.output
    rescored = json.loads((run / "rescored.json").read_text(), parse_constant=pytest.fail)
    assert set(rescored["scores"]) == {"bnm"} and rescored["checked"]["class_ami"] == {"stored": None,
                                                                                      "rescored": None}


def test_rescoring_a_classifier_whose_features_overflow_is_refused_in_one_line(write_recipe, tmp_path):
    """A fuzz counterexample: a byte of classifier.pt edited to 0x7f gave NaN features and scikit-learn's
    traceback from DEV's domain classifier under `rescore`."""
    import torch

    from da_toolkit.rundir import RunDir

    recipe = write_recipe(train={"iterations": 2, "log_every": 1, "checkpoint_every": 2, "workers": 0})
    run = tmp_path / "run"
    assert invoke("run", recipe, "-o", run, "-q").exit_code == 0
    rundir = RunDir(run)
    state, num_classes = rundir.load_classifier()
    first = next(name for name, value in state.items() if value.is_floating_point())
    state[first] = torch.full_like(state[first], 3e38)
    rundir.save_classifier(state, num_classes, rundir.read_recipe())
    assert one_line(invoke("rescore", run)) == (
        f"error: {run}: its classifier gives non-finite features or logits on the selection sample (weights "
        f"damaged, or weights that overflow); no validator can score it")
    assert not (run / "rescored.json").exists()
