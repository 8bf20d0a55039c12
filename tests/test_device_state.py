"""Checkpoints are device-neutral: every tensor a stage checkpoint holds is on the CPU (RNG states as
CPU ByteTensors), and every Stateful's `load_state_dict` takes a state made on another device and puts
it where it works, so a run trained on a GPU resumes on a CPU and the reverse.

On a CPU-only machine the other device is `meta` (tensors without data, so a stream's or pool's
device placement shows without a GPU); with a GPU the same runs go from CUDA to the CPU and back.
"""
from __future__ import annotations

import json

import pytest
import torch

from da_toolkit import pipeline
from da_toolkit.data import BatchStream
from da_toolkit.data.base import device_batches, to_float
from da_toolkit.pipeline import run
from da_toolkit.training import loop
from da_toolkit.training.checkpoint import load_checkpoint
from da_toolkit.training.image_pool import ImagePool
from da_toolkit.training.loop import GlobalRNG, Interrupted
from conftest import toy_digits
from test_resume import INTERRUPT_AT, cases, interrupt_in, recipe_for

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
META = torch.device("meta")


def tensors(value, where: str = ""):
    """(path, tensor) of every tensor in nested dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from tensors(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from tensors(item, f"{where}[{index}]")


def assert_device_neutral(state) -> None:
    """Every tensor on the CPU; every generator / RNG state a CPU ByteTensor (what Generator.set_state takes)."""
    found = list(tensors(state))
    assert found
    off_cpu = [where for where, tensor in found if tensor.device.type != "cpu"]
    assert not off_cpu, off_cpu[:5]
    generators = [(where, t.dtype) for where, t in found if where.split(".")[-1].split("[")[0] in ("generator", "torch", "cuda")]
    assert generators and all(dtype == torch.uint8 for _, dtype in generators), generators


# ------------------------------------------------------------------------------------- batch streams


def test_a_batch_stream_checkpoints_on_the_cpu_and_resumes_on_another_device():
    data = toy_digits("train", 0, 40)
    on_cpu, on_meta = BatchStream(data, 16, seed=3), BatchStream(data, 16, seed=3, device=META)
    for _ in range(3):  # into the second epoch (two batches of 16 per epoch of 40)
        next(on_cpu)
        images, labels = next(on_meta)
        assert images.device == META and labels.device == META
    state = on_meta.state_dict()
    assert_device_neutral(state)
    assert torch.equal(state["order"], on_cpu.state_dict()["order"])
    resumed_on_cpu = BatchStream(data, 16, seed=99)
    resumed_on_cpu.load_state_dict(state)
    resumed_on_meta = BatchStream(data, 16, seed=99, device=META)
    resumed_on_meta.load_state_dict(on_cpu.state_dict())
    for _ in range(4):
        expected = next(on_cpu)[0]
        assert torch.equal(next(resumed_on_cpu)[0], expected)
        assert next(resumed_on_meta)[0].device == META
    assert torch.equal(resumed_on_meta.state_dict()["order"], on_cpu.state_dict()["order"])


def test_a_batch_stream_copies_to_its_device_once_per_epoch_not_per_batch(monkeypatch):
    stream = BatchStream(toy_digits("train", 0, 40), 8, seed=0, device=META)  # five batches per epoch
    copies = []
    to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *args, **kwargs: copies.append(args) or to(self, *args, **kwargs))
    for _ in range(5):
        next(stream)
    assert copies == []
    next(stream)  # a new epoch: its permutation goes to the device, once
    assert len(copies) == 1


def test_device_batches_are_the_dataset_in_order_as_floats():
    images = toy_digits("train", 0, 10).images
    batches = list(device_batches(images, "cpu", 4))
    assert [len(b) for b in batches] == [4, 4, 2] and torch.equal(torch.cat(batches), to_float(images))


# ------------------------------------------------------------------------------------- image pools


def test_an_image_pool_checkpoints_on_the_cpu_and_resumes_on_another_device():
    torch.manual_seed(0)
    fakes = torch.randn(6, 1, 4, 4)
    pool = ImagePool(3, seed=1)
    pool.query(fakes)
    state = pool.state_dict()
    assert_device_neutral(state)
    on_meta = ImagePool(3, seed=2, device=META)
    on_meta.load_state_dict(state)
    assert all(image.device == META for image in on_meta.images)
    out = on_meta.query(fakes.to(META))  # a full pool: swaps stored images in, which must be on the device
    assert out.device == META and out.shape == fakes.shape
    pool.query(fakes)
    assert torch.equal(on_meta.generator.get_state(), pool.generator.get_state())  # the same draws


# ------------------------------------------------------------------------------------- the global RNG


def test_the_global_rng_state_is_cpu_bytes_and_a_gpu_runs_state_resumes_without_a_gpu():
    state = GlobalRNG.state_dict()
    assert_device_neutral(state)
    if "cuda" not in state:  # as a GPU run writes it; restored on this machine's CPU only
        state["cuda"] = [torch.get_rng_state()[:16].clone()]
    expected = torch.rand(3)
    torch.rand(5)
    GlobalRNG.load_state_dict(state)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------ every stage of every method


def devices():
    return ["cpu", pytest.param("cuda", marks=needs_cuda)]


def on(device: str, monkeypatch) -> None:
    """Runs from here on train on `device` (the recipes say device: auto)."""
    monkeypatch.setattr(pipeline, "resolve_device", lambda name: torch.device(device))


FEATURE_AND_PIXEL = [c for c in cases() if c[2] == 0 or c[1] == "target_only"]


def case_id(case) -> str:
    return "+".join(x for x in case[:2] if x)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("case", FEATURE_AND_PIXEL, ids=case_id)
def test_every_stage_checkpoint_holds_only_cpu_tensors(case, device, toy_source_run, tmp_path, monkeypatch):
    saved = []
    save_checkpoint = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda obj, path, kind: saved.append(obj) or save_checkpoint(obj, path, kind))
    on(device, monkeypatch)
    run(recipe_for(*case, toy_source_run), tmp_path, progress=False)
    assert saved
    for obj in saved:
        assert_device_neutral(obj)


@needs_cuda
@pytest.mark.parametrize("first, then", [("cuda", "cpu"), ("cpu", "cuda")])
@pytest.mark.parametrize("case", FEATURE_AND_PIXEL, ids=case_id)
def test_a_run_interrupted_on_one_device_resumes_on_the_other(case, first, then, toy_source_run, tmp_path,
                                                              monkeypatch):
    recipe = recipe_for(*case, toy_source_run)
    straight = tmp_path / "straight"
    with monkeypatch.context() as patch:
        on(then, patch)
        run(recipe, straight, progress=False)
    stages = sorted(path.stem for path in (straight / "checkpoints").glob("*.pt"))
    for stage in stages:
        run_dir = tmp_path / stage
        with monkeypatch.context() as patch:
            on(first, patch)
            interrupt_in(patch, stage, INTERRUPT_AT)
            with pytest.raises(Interrupted):
                run(recipe, run_dir, progress=False)
        assert load_checkpoint(run_dir / "checkpoints" / f"{stage}.pt")["iteration"] == INTERRUPT_AT
        with monkeypatch.context() as patch:
            on(then, patch)
            metrics = run(recipe, run_dir, resume=True, progress=False)
        assert metrics["hardware"] == json.loads((straight / "metrics.json").read_text())["hardware"]
        assert 0 <= metrics["target_accuracy"] <= 1


@needs_cuda
def test_gpu_data_path_gives_the_cpu_batches():
    data = toy_digits("train", 0, 40)
    cuda = torch.device("cuda")
    on_cpu, on_gpu = BatchStream(data, 16, seed=3), BatchStream(data, 16, seed=3, device=cuda)
    for _ in range(5):
        (a, y), (b, z) = next(on_cpu), next(on_gpu)
        assert b.device.type == "cuda" and torch.equal(a, b.cpu()) and torch.equal(y, z.cpu())
    batches = list(device_batches(data.images, cuda, 16))
    assert all(b.device.type == "cuda" for b in batches)
    assert torch.equal(torch.cat(batches).cpu(), to_float(data.images))


@needs_cuda
@pytest.mark.parametrize("precision", ["auto", "bf16", "fp16"])
def test_mixed_precision_trains_every_optimiser_on_the_gpu(precision, tmp_path, monkeypatch):
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no native bfloat16")
    on("cuda", monkeypatch)
    recipe = recipe_for("cyclegan", "adda", 0)
    recipe.train.precision = precision
    metrics = run(recipe, tmp_path, progress=False)
    assert metrics["precision"] in ("bf16", "fp16") and "CUDA" in metrics["hardware"]
