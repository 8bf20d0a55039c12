"""Translations at scale: the translated source written in shards (data/shards.py) as it is made,
read back equal to the one-shot translation, streamed to the feature stage, resumed after an
interruption (an exception, or a real kill -9) with only the missing shards, a corrupted shard
detected and redone, the cache keyed by the translator's weights, and a run on a streamed source
whose feature stage reads the translation from the shards."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from da_toolkit import translate as translate_module
from da_toolkit.adapters.cyclegan import translator as translator_module
from da_toolkit.adapters.cyclegan.translator import CycleGANTranslator
from da_toolkit.adapters.pixel import translate_images
from da_toolkit.context import Context
from da_toolkit.data import BatchStream, DomainDataset, FileDomain
from da_toolkit.data import files as files_module
from da_toolkit.data import shards as shards_module
from da_toolkit.data.base import ConcatDomain
from da_toolkit.data.shards import ShardDomain
from da_toolkit.models import ResnetGenerator
from da_toolkit.pipeline import run
from da_toolkit.recipe import recipe_from_dict
from conftest import toy_recipe_dict
from test_translation import RECEIVED, TINY, pixel_run, toy16  # noqa: F401 (pixel_run: a fixture)

CPU = torch.device("cpu")
BATCH = 8
PER_SHARD = 16  # 40 images: shards of 16, 16 and 8


@pytest.fixture(autouse=True)
def small_shards(monkeypatch):
    monkeypatch.setattr(shards_module, "MAX_SHARD_IMAGES", PER_SHARD)


def generator(sign: float = 1.0) -> ResnetGenerator:
    torch.manual_seed(0)
    net = ResnetGenerator(1, 1, ngf=4, n_blocks=1)
    with torch.no_grad():
        net.model[-2].weight.mul_(sign)
    return net


def translator(net, ctx, **options) -> CycleGANTranslator:
    pixel = {**TINY, "translate_batch_size": BATCH, **options}
    return CycleGANTranslator(net, ctx, recipe_from_dict(toy_recipe_dict(pixel=pixel)).pixel.options)


def image_files(folder: Path, source: DomainDataset) -> FileDomain:
    """`source` written as PNG files and read back as a streamed domain (the same images: 16 px grey)."""
    folder.mkdir()
    paths = []
    for index, image in enumerate(source.images):
        paths.append(folder / f"{index:03d}.png")
        Image.fromarray(image[0].numpy()).save(paths[-1])
    return FileDomain(paths, source.labels, "files", source.class_names, 16, channels=1)


def cache_folder(ctx: Context) -> Path:
    return ctx.cache_dir / ctx.metrics["pixel"]["translation_cache_file"]


def counting(monkeypatch, fail_after: int | None = None) -> list[int]:
    """Count the shards translated (one translate_images call each); raise after `fail_after` of them."""
    calls: list[int] = []

    def translate(*args, **kwargs):
        if fail_after is not None and len(calls) == fail_after:
            raise KeyboardInterrupt
        calls.append(1)
        return translate_images(*args, **kwargs)

    monkeypatch.setattr(translator_module, "translate_images", translate)
    return calls


def test_shards_are_written_and_read_back_equal_to_the_one_shot_translation(tmp_path):
    net, source = generator(), toy16(0)
    one_shot = translate_images(net, source.images, CPU, BATCH)
    ctx = Context(tmp_path / "memory", progress=False)
    in_memory = translator(net, ctx).translate_only(source)
    assert isinstance(in_memory, DomainDataset) and torch.equal(in_memory.images, one_shot)
    index = json.loads((cache_folder(ctx) / "index.json").read_text())
    assert index["images"] == 40 and index["shard_images"] == PER_SHARD and sorted(index["shards"]) == ["0", "1", "2"]
    sizes = [(cache_folder(ctx) / f"shard_{n:05d}.u8").stat().st_size for n in range(3)]
    assert sizes == [16 * 256, 16 * 256, 8 * 256]  # raw uint8 1×16×16 images

    # a streamed source gives a streamed translation, read lazily from the same kind of shards
    files = image_files(tmp_path / "png", source)
    ctx = Context(tmp_path / "stream", progress=False)
    streamed = translator(net, ctx).translate_only(files)
    assert isinstance(streamed, ShardDomain) and streamed.name == "files→cyclegan"
    assert torch.equal(streamed.labels, source.labels) and streamed.class_names == source.class_names
    assert torch.equal(streamed.read([39, 0, 17]), one_shot[[39, 0, 17]])
    assert torch.equal(streamed.in_memory().images, one_shot)
    assert torch.equal(streamed.subset(torch.tensor([5, 20])).read([1, 0]), one_shot[[20, 5]])


def test_the_feature_stage_streams_the_translation_and_its_mix_as_from_memory(tmp_path):
    net, source = generator(), toy16(0)
    files = image_files(tmp_path / "png", source)
    for feature_data, kind in (("translated", ShardDomain), ("both", ConcatDomain)):
        streamed = translator(net, Context(tmp_path / f"s_{feature_data}", progress=False),
                              feature_data=feature_data).translate(files)
        memory = translator(net, Context(tmp_path / f"m_{feature_data}", progress=False),
                            feature_data=feature_data).translate(source)
        assert isinstance(streamed, kind) and isinstance(memory, DomainDataset)
        assert torch.equal(streamed.in_memory().images, memory.images)
        assert torch.equal(streamed.labels, memory.labels)
        from_files, from_memory = BatchStream(streamed, 8, seed=3), BatchStream(memory, 8, seed=3)
        for _ in range(6):  # more than an epoch
            (a, la), (b, lb) = next(from_files), next(from_memory)
            assert torch.equal(a, b) and torch.equal(la, lb)


def test_an_interrupted_translation_resumes_with_only_the_missing_shards(tmp_path, monkeypatch):
    net, source = generator(), toy16(0)
    ctx = Context(tmp_path, progress=False)
    calls = counting(monkeypatch, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        translator(net, ctx).translate_only(source)
    assert len(calls) == 2
    folder = next((tmp_path / "cache").glob("translated_*"))
    assert sorted(json.loads((folder / "index.json").read_text())["shards"]) == ["0", "1"]
    finished = {n: (folder / f"shard_{n:05d}.u8").stat().st_mtime_ns for n in (0, 1)}

    calls = counting(monkeypatch)
    resumed = translator(net, ctx).translate_only(source)
    assert len(calls) == 1 and ctx.metrics["pixel"]["translation_cache"] == "resumed"
    assert {n: (folder / f"shard_{n:05d}.u8").stat().st_mtime_ns for n in (0, 1)} == finished  # kept as they were
    assert torch.equal(resumed.images, translate_images(net, source.images, CPU, BATCH))


KILLED_WRITER = """
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
from da_toolkit.context import Context
from da_toolkit.data import shards
from da_toolkit.data.shards import ShardSet
import test_shards

shards.MAX_SHARD_IMAGES = test_shards.PER_SHARD
write = ShardSet.write
def write_then_die(self, number, images):
    write(self, number, images)
    if len(self.finished) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: as kill -9 from outside
ShardSet.write = write_then_die
net, source = test_shards.generator(), test_shards.toy16(0)
test_shards.translator(net, Context({run!r}, progress=False)).translate_only(source)
"""


def test_after_kill_9_mid_translation_the_finished_shards_are_kept_and_the_rest_resumes(tmp_path, monkeypatch):
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tests).parent), tests]), "OMP_NUM_THREADS": "1"}
    child = subprocess.run([sys.executable, "-c", KILLED_WRITER.format(tests=tests, run=str(tmp_path))], env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    folder = next((tmp_path / "cache").glob("translated_*"))
    assert sorted(json.loads((folder / "index.json").read_text())["shards"]) == ["0", "1"]

    net, source = generator(), toy16(0)
    ctx = Context(tmp_path, progress=False)
    calls = counting(monkeypatch)
    resumed = translator(net, ctx).translate_only(source)
    assert len(calls) == 1 and ctx.metrics["pixel"]["translation_cache"] == "resumed"
    assert torch.equal(resumed.images, translate_images(net, source.images, CPU, BATCH))


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete"])
def test_a_damaged_shard_is_detected_and_translated_again(tmp_path, monkeypatch, damage, capsys):
    net, source = generator(), toy16(0)
    ctx = Context(tmp_path, progress=True)
    good = translator(net, ctx).translate_only(source).images
    shard = cache_folder(ctx) / "shard_00001.u8"
    original = shard.read_bytes()
    data = bytearray(original)
    if damage == "flip a byte":
        data[100] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(bytes(data[:-1]))
    else:
        shard.unlink()
    capsys.readouterr()
    calls = counting(monkeypatch)
    again = translator(net, ctx).translate_only(source)
    assert len(calls) == 1 and ctx.metrics["pixel"]["translation_cache"] == "resumed"
    assert torch.equal(again.images, good) and shard.read_bytes() == original  # written again, exactly
    expected = {"flip a byte": "does not match its sha256", "truncate": "has 4095 bytes, not 4096",
                "delete": "is missing"}[damage]
    assert f"warning: pixel: shard 1 of {cache_folder(ctx)} {expected}" in capsys.readouterr().err


def test_an_index_of_other_dimensions_is_discarded_and_everything_translated_again(tmp_path, monkeypatch, capsys):
    net, source = generator(), toy16(0)
    ctx = Context(tmp_path, progress=True)
    good = translator(net, ctx).translate_only(source).images
    index = cache_folder(ctx) / "index.json"
    data = json.loads(index.read_text())
    index.write_text(json.dumps({**data, "images": 39}))
    capsys.readouterr()
    calls = counting(monkeypatch)
    assert torch.equal(translator(net, ctx).translate_only(source).images, good)
    assert len(calls) == 3 and ctx.metrics["pixel"]["translation_cache"] == "miss"
    assert "warning: pixel: discarding the shards in" in capsys.readouterr().err


def test_the_shard_cache_is_keyed_by_the_weights_and_the_data(tmp_path):
    ctx = Context(tmp_path, progress=False)
    source = toy16(0)
    first = translator(generator(), ctx).translate_only(source)
    folders = {cache_folder(ctx)}
    other_weights = translator(generator(-1.0), ctx).translate_only(source)
    assert ctx.metrics["pixel"]["translation_cache"] == "miss" and not torch.equal(other_weights.images, first.images)
    folders.add(cache_folder(ctx))
    translator(generator(), ctx).translate_only(toy16(0, "test"))
    assert ctx.metrics["pixel"]["translation_cache"] == "miss"
    folders.add(cache_folder(ctx))
    assert len(folders) == 3 and set((tmp_path / "cache").iterdir()) == folders
    again = translator(generator(), ctx).translate_only(source)
    assert ctx.metrics["pixel"]["translation_cache"] == "hit" and torch.equal(again.images, first.images)


def test_a_run_on_a_streamed_source_trains_its_feature_stage_on_the_shards_as_in_memory(tmp_path):
    source = toy16(0, count=60)
    for split in ("train", "test"):
        for index, (image, label) in enumerate(zip(source.images, source.labels.tolist())):
            (tmp_path / "folder" / split / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy()).save(tmp_path / "folder" / split / str(label) / f"{index:03d}.png")
    received = {}
    for storage in ("stream", "memory"):
        data = {"source": {"name": "imagefolder", "root": str(tmp_path / "folder"), "storage": storage}}
        pixel = {**TINY, "feature_data": "both", "label_filter": "drop", "semantic_classifier_iterations": 2}
        recipe = recipe_from_dict(toy_recipe_dict(data=data, pixel=pixel, feature={"adapter": "test_record"},
                                                  train={"iterations": 2}))
        RECEIVED.clear()
        run(recipe, tmp_path / storage, progress=False)
        received[storage] = RECEIVED["source"]
    streamed, memory = received["stream"], received["memory"]
    assert isinstance(streamed, ConcatDomain) and isinstance(memory, DomainDataset)
    assert any(isinstance(part, ShardDomain) for part in streamed.parts)
    assert torch.equal(streamed.in_memory().images, memory.images) and torch.equal(streamed.labels, memory.labels)


def test_translate_streams_a_folder_writing_each_batch_before_reading_the_next(pixel_run, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    for index, image in enumerate(toy16(0, count=5).images):
        Image.fromarray(image[0].numpy()).save(folder / f"{index}.png")
    read, written_before = [], []

    original = files_module.read_rgb

    def read_rgb(path, size=None):
        written_before.append(len(list((tmp_path / "out").glob("*.png"))) if (tmp_path / "out").exists() else 0)
        read.append(Path(path).name)
        return original(path, size)

    monkeypatch.setattr(files_module, "read_rgb", read_rgb)  # decoded in this process (workers=0), so seen here
    assert translate_module.translate_folder(pixel_run, folder, tmp_path / "out", batch_size=2, workers=0) == 5
    assert read == [f"{i}.png" for i in range(5)]
    assert written_before == [0, 0, 2, 2, 4]  # batches of 2: read, translated and written one after another
