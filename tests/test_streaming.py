"""Domains of image files read lazily (issue 24): the streamed path trains exactly as the in-memory
path does and resumes exactly; `storage: auto` says what it chose; image lists; classes matched by
name across source, target and target test."""
from __future__ import annotations

import os
import signal

import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from da_toolkit.cli import main
from da_toolkit.context import Context
from da_toolkit.data import DATASETS, build_domain, build_domains, match_classes
from da_toolkit.data.base import BatchStream, DomainDataset
from da_toolkit.errors import UserError
from da_toolkit.pipeline import run
from da_toolkit.recipe import DomainSpec, recipe_from_dict
from da_toolkit.training.checkpoint import load_checkpoint
from da_toolkit.training.loop import Interrupted

CLASSES = ("cat", "dog", "fox")


def write_folder(root, classes=CLASSES, per_class=8, shade=0):
    """root/<class>/<i>.png: 12×12 grey noise whose brightness depends on the class (and `shade`)."""
    generator = torch.Generator().manual_seed(len(str(root)) + shade)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = (torch.rand(12, 12, generator=generator) * 60 + 60 * label + shade).clamp(0, 255)
            Image.fromarray(image.to(torch.uint8).numpy(), "L").save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("folders")
    return {split: {side: write_folder(base / side / split, shade=shade) for side, shade in (("a", 0), ("b", 40))}
            for split in ("train", "test")}


def folder_recipe(folders, storage: str, iterations: int = 6) -> dict:
    """DANN on folder a (source) → folder b (target), both read with `storage`."""
    def domain(side, split="train"):
        return {"name": "imagefolder", "root": str(folders[split][side].parent), "split": split, "storage": storage}
    return {
        "name": "files",
        "data": {"source": domain("a"), "target": domain("b"), "target_test": domain("b", "test"),
                 "image_size": 16, "channels": 1},
        "classifier": {"backbone": "lenet", "bottleneck_dim": 8},
        "feature": {"adapter": "dann", "discriminator_hidden": [8]},
        "train": {"iterations": iterations, "batch_size": 6, "log_every": 1, "checkpoint_every": 1000,
                  "workers": 1}}


def weights(run_dir) -> dict:
    return load_checkpoint(run_dir / "classifier.pt")["state_dict"]


@pytest.fixture(scope="module")
def streamed_run(folders, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("stream") / "run"
    return run(recipe_from_dict(folder_recipe(folders, "stream")), run_dir, progress=False), run_dir


def test_a_folder_streamed_trains_to_the_weights_it_trains_to_in_memory(folders, streamed_run, tmp_path):
    streamed_metrics, streamed_dir = streamed_run
    metrics = run(recipe_from_dict(folder_recipe(folders, "memory")), tmp_path / "memory", progress=False)
    streamed, in_memory = weights(streamed_dir), weights(tmp_path / "memory")
    assert streamed.keys() == in_memory.keys()
    assert all(torch.equal(streamed[key], in_memory[key]) for key in streamed)
    assert streamed_metrics["target_accuracy"] == metrics["target_accuracy"]
    assert streamed_metrics["target"]["class_names"] == list(CLASSES)


def test_a_streamed_run_interrupted_resumes_to_the_same_weights(folders, streamed_run, tmp_path, monkeypatch):
    recipe = recipe_from_dict(folder_recipe(folders, "stream"))
    original = Context.log_scalars

    def log_scalars(self, name, step, scalars):
        original(self, name, step, scalars)
        if name == "feature" and step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the loop saves after this step and stops

    with monkeypatch.context() as patch:
        patch.setattr(Context, "log_scalars", log_scalars)
        with pytest.raises(Interrupted):
            run(recipe, tmp_path / "run", progress=False)
    run(recipe, tmp_path / "run", resume=True, progress=False)
    expected, resumed = weights(streamed_run[1]), weights(tmp_path / "run")
    assert all(torch.equal(expected[key], resumed[key]) for key in expected)


def test_a_streamed_batch_stream_loaded_with_a_state_draws_from_there(folders):
    domain = build_domain(DomainSpec(name="imagefolder", root=str(folders["train"]["a"].parent), storage="stream"),
                          16, 1, 0, workers=1)
    stream = BatchStream(domain, 5, seed=3)
    next(stream)
    state = {key: value.clone() if torch.is_tensor(value) else value for key, value in stream.state_dict().items()}
    expected = [next(stream) for _ in range(6)]  # across an epoch's end (24 images: 4 batches of 5)
    stream.load_state_dict(state)  # the workers have decoded ahead of here: they must start again
    for (images, labels), (want_images, want_labels) in zip((next(stream) for _ in range(6)), expected):
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)


def test_storage_auto_reads_into_memory_what_fits_the_budget_and_says_so(folders):
    spec = DomainSpec(name="imagefolder", root=str(folders["train"]["a"].parent), split="train")
    lines = []
    small = build_domain(spec, 16, 1, 0, workers=2, memory_budget_gb=1.0, key="data.source", report=lines.append)
    large = build_domain(spec, 16, 1, 0, workers=2, memory_budget_gb=1e-6, key="data.source", report=lines.append)
    assert isinstance(small, DomainDataset) and not isinstance(large, DomainDataset)
    assert torch.equal(small.images, large.in_memory().images) and torch.equal(small.labels, large.labels)
    assert lines[0].startswith("data.source: imagefolder/train, 24 images 1×16×16, read into memory")
    assert "fits the memory budget of 1 GB" in lines[0]
    assert "streamed from its files by 2 worker(s)" in lines[1] and "exceeds the memory budget" in lines[1]


def test_the_memory_budget_is_shared_by_the_runs_domains(folders):
    recipe = recipe_from_dict({**folder_recipe(folders, "auto"), "data": {
        **folder_recipe(folders, "auto")["data"], "memory_budget_gb": 24 * 256 * 1.5 / 1e9}})  # 1.5 domains of 24
    lines = []
    domains = build_domains(recipe.data, 0, workers=1, report=lines.append)
    assert isinstance(domains.source, DomainDataset) and not isinstance(domains.target, DomainDataset)
    assert "fits the memory budget of 9.216e-06 GB" in lines[0]
    assert "exceeds the 0.00 GB left of the memory budget of 9.216e-06 GB" in lines[1]


def test_only_file_domains_read_into_memory_skip_unreadable_images(folders):
    with pytest.raises(UserError, match="data.target.storage: stream needs a file-backed domain"):
        build_domain(DomainSpec(name="toy_target", storage="stream"), 16, 1, 0, key="data.target")
    spec = DomainSpec(name="imagefolder", root=str(folders["train"]["a"].parent), skip_unreadable=True)
    with pytest.raises(UserError, match="data.source.skip_unreadable: a streamed domain cannot skip"):
        build_domain(spec, 16, 1, 0, memory_budget_gb=1e-6, key="data.source")


# ---------------------------------------------------------------------------------- image lists


def test_an_image_list_names_its_classes_after_their_folders(tmp_path):
    write_folder(tmp_path / "images", per_class=2)
    listing = tmp_path / "lists" / "all.txt"
    listing.parent.mkdir()
    listing.write_text("# path label\nimages/fox/0.png 0\n\nimages/cat/1.png 2\nimages/dog/0.png 1\n")
    domain = DATASETS.get("imagelist")("train", tmp_path, image_size=16, folder=str(tmp_path), list_file=str(listing))
    assert domain.class_names == ["fox", "dog", "cat"] and domain.labels.tolist() == [0, 2, 1]  # the list's order
    assert domain.configured(16, 1, 0).in_memory().images.shape == (3, 1, 16, 16)


@pytest.mark.parametrize("line, message", [
    ("images/cat/0.png", "all.txt:1: expected `relative/path.jpg label`"),
    ("images/cat/0.png x", "all.txt:1: expected"),
    ("images/cat/9.png 0", "lists .*9.png, which does not exist"),
])
def test_a_bad_image_list_names_the_file_and_line(tmp_path, line, message):
    write_folder(tmp_path / "images", per_class=1)
    (tmp_path / "all.txt").write_text(line + "\n")
    with pytest.raises(UserError, match=message):
        DATASETS.get("imagelist")("train", tmp_path, folder=str(tmp_path), list_file=str(tmp_path / "all.txt"))


# ------------------------------------------------------------------------ classes matched by name


def test_a_target_listing_its_classes_in_another_order_is_relabeled_into_the_sources(tmp_path):
    source = DomainDataset(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 2]), "source",
                           num_classes=3, class_names=["cat", "dog", "fox"])
    target = DomainDataset(torch.zeros(4, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 2, -1]), "target",
                           num_classes=3, class_names=["fox", "cat", "dog"])
    matched = match_classes(source.class_names, target, "target")
    assert matched.labels.tolist() == [2, 0, 1, -1] and matched.class_names == ["cat", "dog", "fox"]


def test_different_class_names_exit_2_naming_them_before_anything_is_written(folders, tmp_path):
    other = write_folder(tmp_path / "other" / "train", classes=("cat", "dog", "wolf"))
    write_folder(tmp_path / "other" / "test", classes=("cat", "dog", "wolf"))
    recipe = folder_recipe(folders, "auto")
    recipe["data"]["target"] = {"name": "imagefolder", "root": str(other.parent)}
    recipe["data"]["target_test"] = {"name": "imagefolder", "root": str(other.parent), "split": "test"}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(tmp_path / "run"), "-q"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0] == ("error: data.target: imagefolder/train lacks 1 of the source's classes (fox) and has 1 the "
                        "source lacks (wolf); source and target must have the same class names (folder or list "
                        "class names, matched by name)")
    assert not (tmp_path / "run").exists()
