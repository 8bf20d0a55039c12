"""Opening what others share is safe: no file the toolkit reads can run code, a malformed file is
one clear error naming it (exit 2), caches are checked before use, hostile images are refused or
skipped, files honour the umask, and a full disk leaves the last good checkpoint intact."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from conftest import toy_recipe_dict
from da_toolkit.cli import main
from da_toolkit.data import build_domain
from da_toolkit.errors import UserError
from da_toolkit.recipe import DomainSpec
from da_toolkit.training import checkpoint
from da_toolkit.training.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint, write_json_atomic

PIXEL = {"adapter": "cyclegan", "iterations": 4, "batch_size": 4, "ngf": 4, "ndf": 4, "generator_blocks": 1,
         "discriminator_layers": 2, "pool_size": 2, "image_grid_every": 0, "label_preservation_iterations": 0,
         "semantic_classifier_iterations": 50}


class MakesMarker:
    """Unpickling this would create the file `path`: what a hostile checkpoint could do."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def write_hostile(path: Path, marker: Path) -> None:
    torch.save({"state_dict": MakesMarker(marker), "images": MakesMarker(marker)}, path)



@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    """A finished toy run with a CycleGAN pixel stage, started from a recipe file with the CLI."""
    folder = tmp_path_factory.mktemp("shared_run")
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(toy_recipe_dict(pixel=PIXEL, train={"iterations": 20, "checkpoint_every": 10})))
    result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(folder / "run"), "-q"])
    assert result.exit_code == 0, result.output
    return recipe, folder / "run"


@pytest.fixture
def copy_of(pixel_run, tmp_path):
    """A fresh copy of the pixel run (as a colleague would pass it on) and its recipe."""
    recipe, run_dir = pixel_run
    copy = tmp_path / "received"
    shutil.copytree(run_dir, copy)
    return recipe, copy


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, path: Path, *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], lines
    for word in words:
        assert word in lines[0], lines


# ------------------------------------------------------------------------------- no load runs code


def test_evaluate_refuses_a_hostile_classifier(copy_of, tmp_path):
    _, run_dir = copy_of
    marker = tmp_path / "MARKER"
    write_hostile(run_dir / "classifier.pt", marker)
    result = invoke("evaluate", run_dir, "--dataset", "toy_target")
    assert not marker.exists()
    assert_one_line_error(result, run_dir / "classifier.pt", "refused to load")


def test_translate_refuses_a_hostile_pixel_checkpoint(copy_of, tmp_path):
    _, run_dir = copy_of
    marker = tmp_path / "MARKER"
    write_hostile(run_dir / "checkpoints" / "pixel.pt", marker)
    (tmp_path / "in").mkdir()
    Image.new("L", (8, 8), 40).save(tmp_path / "in" / "x.png")
    result = invoke("translate", run_dir, "--input", tmp_path / "in", "--output", tmp_path / "out")
    assert not marker.exists()
    assert_one_line_error(result, run_dir / "checkpoints" / "pixel.pt", "refused to load")


def test_resume_refuses_a_hostile_stage_checkpoint(copy_of, tmp_path):
    recipe, run_dir = copy_of
    marker = tmp_path / "MARKER"
    path = run_dir / "checkpoints" / "feature.pt"
    write_hostile(path, marker)
    result = invoke("run", recipe, "-o", run_dir, "--resume", "-q")
    assert not marker.exists()
    assert_one_line_error(result, path, "refused to load")


def test_a_hostile_translation_shard_is_never_unpickled_but_found_damaged_and_redone(copy_of, tmp_path):
    recipe, run_dir = copy_of
    marker = tmp_path / "MARKER"
    shard = next((run_dir / "cache").glob("translated_*/shard_00000.u8"))
    good = shard.read_bytes()
    write_hostile(shard, marker)  # raw uint8 bytes are read with numpy: a pickle in their place runs nothing
    result = invoke("run", recipe, "-o", run_dir, "--resume")
    assert result.exit_code == 0, result.output
    assert not marker.exists() and shard.read_bytes() == good
    assert "warning: pixel: shard 0 of" in result.stderr


def test_pixel_from_refuses_a_hostile_shared_pixel_stage(copy_of, tmp_path):
    _, shared = copy_of
    marker = tmp_path / "MARKER"
    write_hostile(shared / "checkpoints" / "pixel.pt", marker)
    recipe = tmp_path / "sharing.yaml"
    recipe.write_text(yaml.safe_dump(toy_recipe_dict(pixel=PIXEL, pixel_from=str(shared), train={"iterations": 5})))
    result = invoke("run", recipe, "-o", tmp_path / "new", "-q")
    assert not marker.exists()
    assert_one_line_error(result, shared / "checkpoints" / "pixel.pt", "refused to load")


# ------------------------------------------------------------------- malformed files, one line each


def other_programs_file(path: Path) -> None:
    torch.save({"weight": torch.zeros(2)}, path)


def another_class_count(path: Path) -> None:
    state = load_checkpoint(path, "classifier")
    state["state_dict"]["head.weight"] = torch.zeros(3, state["state_dict"]["head.weight"].shape[1])
    save_checkpoint({k: v for k, v in state.items() if k != "format"}, path, "classifier")


def future_format(path: Path) -> None:
    state = load_checkpoint(path, "classifier")
    state["format"]["version"] = FORMAT_VERSION + 1
    torch.save(state, path)


def truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("damage, words", [
    (truncated, ["truncated, corrupt or not a torch file"]),
    (lambda path: path.write_bytes(b""), ["empty file"]),
    (lambda path: path.write_text("not a checkpoint\n"), ["not a readable classifier"]),
    (other_programs_file, ["no state_dict", "another program"]),
    (another_class_count, ["does not fit this model", "head.weight"]),
    (future_format, ["newer da-toolkit", f"format {FORMAT_VERSION + 1}", "upgrade"]),
], ids=["truncated", "empty", "text", "other_program", "class_count", "future_format"])
def test_a_malformed_classifier_is_one_line_naming_the_file(copy_of, damage, words):
    _, run_dir = copy_of
    damage(run_dir / "classifier.pt")
    assert_one_line_error(invoke("evaluate", run_dir, "--dataset", "toy_target"), run_dir / "classifier.pt", *words)


def test_a_stage_checkpoint_of_another_kind_or_missing_a_module_is_refused(copy_of):
    recipe, run_dir = copy_of
    feature = run_dir / "checkpoints" / "feature.pt"
    saved = load_checkpoint(feature, "stage")
    del saved["state"]["optimizer"]
    save_checkpoint({k: v for k, v in saved.items() if k != "format"}, feature, "stage")
    assert_one_line_error(invoke("run", recipe, "-o", run_dir, "--resume", "-q"), feature, "no state for optimizer")
    shutil.copy(run_dir / "classifier.pt", feature)
    assert_one_line_error(invoke("run", recipe, "-o", run_dir, "--resume", "-q"), feature,
                          "this is a classifier file, not a stage checkpoint")


def test_a_malformed_metrics_or_recipe_file_is_one_line(copy_of):
    _, run_dir = copy_of
    (run_dir / "metrics.json").write_text("{ not json")
    assert_one_line_error(invoke("show", run_dir), run_dir / "metrics.json", "not a readable metrics file")
    (run_dir / "recipe.yaml").write_bytes(b"\xff\xfe binary")
    assert_one_line_error(invoke("evaluate", run_dir, "--dataset", "toy_target"), run_dir / "recipe.yaml",
                          "not a text (UTF-8) file")


def test_files_written_before_format_headers_still_load(copy_of):
    """A run directory from before format headers (format 0) keeps working: evaluate reads it."""
    _, run_dir = copy_of
    path = run_dir / "classifier.pt"
    state = load_checkpoint(path, "classifier")
    torch.save({"state_dict": state["state_dict"], "recipe": state["recipe"]}, path)  # no header, no class count
    result = invoke("evaluate", run_dir, "--dataset", "toy_target")
    expected = json.loads((run_dir / "metrics.json").read_text())["target_accuracy"]
    assert result.exit_code == 0 and f"accuracy {100 * expected:.2f}%" in result.output


# ------------------------------------------------------------------------- caches checked before use


def test_a_cache_entry_that_does_not_match_its_dataset_is_recomputed(copy_of):
    recipe, run_dir = copy_of
    index = next((run_dir / "cache").glob("translated_*/index.json"))
    shards = sorted(index.parent.glob("shard_*.u8"))
    good = [shard.read_bytes() for shard in shards]
    write_json_atomic(index, {**json.loads(index.read_text()), "images": 7})  # an index of another dataset's size
    result = invoke("run", recipe, "-o", run_dir, "--resume")
    assert result.exit_code == 0, result.output
    assert "discarding the shards in" in result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stages"]["pixel"]["translation_cache"] == "miss"
    assert [shard.read_bytes() for shard in shards] == good  # recomputed exactly


# --------------------------------------------------------------------------------- hostile images


def read_folder(folder, storage, **options):
    return build_domain(DomainSpec("imagefolder", root=str(folder), storage=storage, **options), 8, 1, 0)


def test_decompression_bomb_is_refused_or_skipped(tmp_path, monkeypatch):
    for split in ("train", "test"):
        (tmp_path / split / "one").mkdir(parents=True)
        Image.new("L", (8, 8), 50).save(tmp_path / split / "one" / "small.png")
    Image.new("L", (40, 40), 50).save(tmp_path / "train" / "one" / "zbomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40×40 = 1,600 pixels is a "bomb" here
    with pytest.raises(UserError, match=r"zbomb.png: refused: more than 1000 pixels"):
        read_folder(tmp_path, "memory")
    with pytest.raises(UserError, match=r"zbomb.png: refused: more than 1000 pixels"):  # streamed: when it is read
        list(read_folder(tmp_path, "stream").chunks(8))
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        data = read_folder(tmp_path, "memory", skip_unreadable=True)
    assert len(data) == 1


def test_unreadable_image_names_the_file_and_symlink_loops_end(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "one").mkdir(parents=True)
        Image.new("L", (8, 8), 50).save(tmp_path / split / "one" / "a.png")
    os.symlink(tmp_path / "train", tmp_path / "train" / "one" / "loop")  # a directory cycle
    os.symlink("self.png", tmp_path / "train" / "one" / "self.png")  # a link to itself
    with pytest.raises(UserError, match=r"self.png: not a readable image"):
        read_folder(tmp_path, "memory")
    (tmp_path / "train" / "one" / "self.png").unlink()
    (tmp_path / "train" / "one" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        data = read_folder(tmp_path, "memory", skip_unreadable=True)
    assert len(data) == 1  # a.png once, although the loop reaches it again


def test_skip_unreadable_is_only_for_image_folders(write_recipe):
    path = write_recipe(data={"source": {"name": "toy_source", "skip_unreadable": True}})
    result = invoke("run", path)
    assert result.exit_code == 2 and "data.source.skip_unreadable" in result.stderr


# ------------------------------------------------------------------------------ umask and full disk


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        save_checkpoint({"images": torch.zeros(1), "labels": torch.zeros(1)}, tmp_path / "a.pt", "dataset")
        write_json_atomic(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(previous)
    assert (tmp_path / "a.pt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == mode


def test_run_files_honour_the_umask(pixel_run):
    _, run_dir = pixel_run
    expected = 0o666 & ~(lambda m: (os.umask(m), m)[1])(os.umask(0))
    for name in ("recipe.yaml", "metrics.json", "classifier.pt", "checkpoints/feature.pt"):
        assert (run_dir / name).stat().st_mode & 0o777 == expected, name


def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(write_recipe, tmp_path, monkeypatch):
    recipe = write_recipe(train={"iterations": 60, "checkpoint_every": 20})
    real_fsync, calls = os.fsync, []

    def fsync(fd):  # recipe.yaml, feature.pt @ 20 succeed; the checkpoint @ 40 finds the disk full
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    run_dir = tmp_path / "run"
    result = invoke("run", recipe, "-o", run_dir, "-q")
    feature = run_dir / "checkpoints" / "feature.pt"
    assert_one_line_error(result, feature, "No space left on device", "intact")
    assert load_checkpoint(feature, "stage")["iteration"] == 20
    assert sorted(p.name for p in feature.parent.iterdir()) == ["feature.pt"]  # no partial file
    assert not (run_dir / "metrics.json").exists()

