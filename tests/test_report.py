"""`da-toolkit report`: known answers for the A-distance, a seeded t-SNE, and a page with every
section and no external URL, on a tiny run and its baseline."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from conftest import toy_recipe_dict
from da_toolkit.cli import main
from da_toolkit.report import proxy_a_distance, tsne

PIXEL = {"adapter": "cyclegan", "iterations": 4, "batch_size": 4, "ngf": 4, "ndf": 4, "generator_blocks": 1,
         "discriminator_layers": 2, "pool_size": 2, "image_grid_every": 0, "label_preservation_iterations": 5,
         "semantic_classifier_iterations": 50}


def test_a_distance_of_one_distribution_is_near_zero_and_of_separated_ones_is_two():
    generator = np.random.default_rng(0)
    same = proxy_a_distance(generator.normal(size=(400, 8)), generator.normal(size=(400, 8)))
    assert abs(same["a_distance"]) < 0.25 and 0.43 < same["domain_error"] < 0.57  # chance-level, ± sampling noise
    apart = proxy_a_distance(generator.normal(size=(400, 8)), generator.normal(size=(400, 8)) + 10)
    assert apart == {"a_distance": 2.0, "domain_error": 0.0, "train_images": 400, "test_images": 400}


def test_tsne_is_seeded():
    features = np.random.default_rng(1).normal(size=(60, 5)).astype(np.float32)
    assert np.array_equal(tsne(features, seed=3), tsne(features, seed=3))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("report")
    made = {}
    for name, sections in (("pixel", {"pixel": PIXEL}), ("baseline", {})):
        recipe = folder / f"{name}.yaml"
        recipe.write_text(yaml.safe_dump(toy_recipe_dict(train={"iterations": 20}, **sections)))
        result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(folder / name), "-q"])
        assert result.exit_code == 0, result.output
        made[name] = folder / name
    return made


def test_report_has_every_section_and_no_external_url(runs, tmp_path):
    result = CliRunner().invoke(main, ["report", str(runs["pixel"]), "--baseline", str(runs["baseline"]),
                                       "-o", str(tmp_path), "--sample", "100"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    for section in ("summary", "feature-maps", "proxy-a-distance", "per-class", "pixel-stage", "training-curves"):
        assert f"<section id='{section}'>" in page
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # everything embedded, nothing fetched
    assert page.count("data:image/png;base64,") == 3 + len(json.loads((tmp_path / "report.json").read_text())["curves"])
    # maps, per class, pixel grid, and one figure of curves per stage

    report = json.loads((tmp_path / "report.json").read_text())
    runs_in_report = list(report["runs"].values())
    for run_dir, numbers in zip((runs["pixel"], runs["baseline"]), runs_in_report):
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert numbers["target_accuracy"] == metrics["target_accuracy"]  # the same classifier on the same test set
        assert numbers["per_class_accuracy"] == metrics["target"]["per_class_accuracy"]
    run, base = (r["per_class_accuracy"] for r in runs_in_report)
    assert report["classes_worse_than_baseline"] == [str(c) for c in range(10) if run[c] < base[c]]  # digit names
    assert set(report["curves"]) == {"pixel_classifier", "pixel", "pixel_oracle", "feature", "selection"}  # all logged
    assert report["pixel"]["images"] == 100 and len(report["pixel"]["oracle_reads_per_class"]) == 10


def test_report_of_the_same_run_twice_gives_the_same_numbers(runs, tmp_path):
    for name in ("a", "b"):
        result = CliRunner().invoke(main, ["report", str(runs["baseline"]), "-o", str(tmp_path / name),
                                           "--sample", "80"])
        assert result.exit_code == 0, result.output
    first, second = (json.loads((tmp_path / n / "report.json").read_text()) for n in ("a", "b"))
    first.pop("seconds"), second.pop("seconds")
    assert first == second


def test_a_classifier_whose_features_overflow_is_refused_in_one_line(runs, tmp_path):
    """A fuzz counterexample: a byte of classifier.pt edited to 0x7f gave huge weights, NaN features and
    scikit-learn's traceback from the A-distance's logistic regression."""
    from da_toolkit.rundir import RunDir

    shutil.copytree(runs["baseline"], tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    rundir = RunDir(tmp_path / "run")
    state, num_classes = rundir.load_classifier()
    first = next(name for name, value in state.items() if value.is_floating_point())
    state[first] = torch.full_like(state[first], 3e38)
    rundir.save_classifier(state, num_classes, rundir.read_recipe())
    result = CliRunner().invoke(main, ["report", str(tmp_path / "run"), "-o", str(tmp_path / "report")])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"error: {tmp_path / 'run'}: its classifier gives non-finite features (classifier.pt damaged, or weights "
        f"that overflow); no report of it can be drawn"]
    assert not (tmp_path / "report").exists()
