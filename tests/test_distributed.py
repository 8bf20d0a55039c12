"""Data-parallel training over several processes (training/distributed.py, `torchrun`, `run --nproc`).

Fast, in one process with a fake world: each rank's stream draws its slice of the 1-process batch;
a process other than rank 0 writes nothing; `--nproc` launches torchrun. Two real gloo processes
(spawned, a few seconds): distributed training gives the weights of a 1-process run with the same
global batch, the ranks' batch-norm statistics stay equal, and a step reduces its gradients in
DistributedDataParallel's buckets. Slow, through torchrun: every stage
trains in 2 processes into one run directory, within a stated tolerance of the 1-process run, and a
2-process run interrupted in a stage resumes to the weights of an uninterrupted one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from click.testing import CliRunner
from torch import nn

from conftest import toy_digits, toy_recipe_dict
from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.base import AdapterSetup
from da_toolkit.cli import main
from da_toolkit.context import Context
from da_toolkit.data import BatchStream, DomainDataset
from da_toolkit.models import create_classifier
from da_toolkit.errors import UserError
from da_toolkit.pipeline import run
from da_toolkit.recipe import TrainConfig, load_recipe
from da_toolkit.training import distributed
from da_toolkit.training.checkpoint import load_checkpoint
from da_toolkit.training.distributed import World
from da_toolkit.training.loop import train_loop

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


# ------------------------------------------------------------------ one process, fake world


@pytest.mark.parametrize("size", [2, 4])
def test_rank_streams_together_draw_the_one_process_batches(size):
    data = toy_digits("train", 0, count=50)  # 50 images, batches of 8: epochs end with a dropped remainder
    whole = BatchStream(data, 8, seed=3)
    ranks = [BatchStream(data, 8, seed=3, world=World(rank, size)) for rank in range(size)]
    for _ in range(20):  # over three epochs
        images, labels = next(whole)
        parts = [next(stream) for stream in ranks]
        assert all(len(part[1]) == 8 // size for part in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), images)
        assert torch.equal(torch.cat([p[1] for p in parts]), labels)
    # the state is the same on every rank (rank 0's checkpoint serves them all)
    states = [stream.state_dict() for stream in ranks]
    assert all(s["position"] == states[0]["position"] and torch.equal(s["order"], states[0]["order"]) for s in states)


def test_a_batch_that_does_not_split_over_the_ranks_is_refused():
    data = toy_digits("train", 0, count=50)
    with pytest.raises(UserError, match="a batch of 9 images does not split evenly over 2 processes"):
        BatchStream(data, 9, seed=0, world=World(0, 2))
    # a dataset smaller than the batch: its size rounded down to a multiple of the process count
    small = BatchStream(toy_digits("train", 0, count=7), 8, seed=0, world=World(1, 2))
    assert small.batch_size == 6 and len(next(small)[1]) == 3


def test_a_rank_other_than_0_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    ctx = Context(run_dir, main=False, checkpoint_every=2, log_every=1, progress=True)
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(iteration):
        optimizer.zero_grad()
        loss = model(torch.ones(4, 2)).pow(2).mean()
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}

    train_loop(ctx, "feature", 5, step, {"model": model, "optimizer": optimizer})
    ctx.info("a line for the log")
    ctx.writer.add_image("pixel/a2b", torch.zeros(3, 4, 4), 1)
    ctx.close()
    assert not run_dir.exists()
    # rank 0 of the same run writes its checkpoint and log
    ctx = Context(run_dir, main=True, checkpoint_every=2, log_every=1, progress=False)
    train_loop(ctx, "feature", 5, step, {"model": model, "optimizer": optimizer})
    ctx.close()
    assert ctx.checkpoint_path("feature").exists() and (run_dir / "log.txt").read_text()


def test_nproc_launches_torchrun_with_the_same_arguments(tmp_path, monkeypatch, write_recipe):
    recipe = write_recipe()
    launched = []
    monkeypatch.setattr(distributed, "launch", lambda nproc, arguments: launched.append((nproc, arguments)) or 0)
    result = CliRunner().invoke(main, ["run", str(recipe), "train.iterations=7", "--nproc", "2", "--resume", "-q",
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert launched == [(2, ["run", str(recipe), "train.iterations=7", "--output", str(tmp_path / "out"), "--resume",
                             "--quiet"])]
    assert not (tmp_path / "out").exists()  # the launcher itself trains nothing


# ------------------------------------------------------------------ two gloo processes


STEPS, BATCH = 12, 8


def _net(batch_norm: bool) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(64, 16), *([nn.BatchNorm1d(16)] if batch_norm else []), nn.ReLU(), nn.Linear(16, 10)]
    return nn.Sequential(*layers)


def _train(batch_norm: bool, world: World | None = None) -> tuple[nn.Module, int]:
    """STEPS SGD steps of a small net on toy digits in global batches of BATCH, distributed over the
    current process group; (the net, the all-reduces of its last step)."""
    net = _net(batch_norm)
    parallel = distributed.distribute(net, torch.device("cpu"))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    stream = BatchStream(toy_digits("train", 0, count=40), BATCH, seed=1, world=world)
    for _ in range(STEPS):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            images, labels = next(stream)
            loss = nn.functional.cross_entropy(parallel(images.flatten(1)), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    all_reduces = sum(event.name == "c10d::allreduce_" for event in profiler.events())
    return net, all_reduces


# each adapter's own steps, 3 iterations of each stage, with networks small enough to take seconds
ADAPTER_OPTIONS = {
    "dann": {"guard": "ignore", "discriminator_hidden": [16], "mcc_trade_off": 1.0},
    "cdan": {"guard": "ignore", "discriminator_hidden": [16], "discriminator_batch_norm": True,
             "domain_batches": "joint"},  # one forward of both domains
    "adda": {"pretrain_iterations": 3, "adapt_iterations": 3, "discriminator_hidden": [16]},
    "afn": {"guard": "ignore"},  # two forwards (one batch per domain, the joint family's default), one backward
    "fixmatch": {"guard": "ignore", "threshold": 0.0},  # three forwards (one without gradient), one backward
    "dirt_t": {"vada_iterations": 3, "dirt_iterations": 3, "teacher_every": 2, "guard": "ignore",
               "discriminator_hidden": [16]},
    "cyclegan": {"iterations": 3, "batch_size": 4, "ngf": 4, "ndf": 4, "generator_blocks": 1, "norm": "batch",
                 "pool_size": 2, "image_grid_every": 0, "semantic_classifier_iterations": 3,
                 "label_preservation_iterations": 0},
}


def _adapted() -> dict[str, dict]:
    """{adapter: {stage/key: tensor} of every stage checkpoint it wrote} after each adapter's fit on random
    28×28 images in global batches of BATCH, distributed over the current process group. Every rank writes
    its own run directory (main=True), so that each rank's networks, optimisers and streams can be compared."""
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    source = DomainDataset(images, torch.arange(64) % 10, "source")
    target = DomainDataset(images.flip(0), torch.full((64,), -1), "target")
    train = TrainConfig(iterations=3, batch_size=BATCH, device="cpu", precision="fp32", workers=0)
    setup = AdapterSetup(train, 28, 1, 0, lambda classes: create_classifier("lenet", 1, 28, classes, 32))
    trained = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, options in ADAPTER_OPTIONS.items():
            torch.manual_seed(0)
            ctx = Context(Path(folder) / name, progress=False)
            adapter = ADAPTERS.get(name)(ADAPTERS.get(name).Options(**options), setup)
            if adapter.kind == "pixel":
                adapter.fit(source, target, ctx)
            else:
                adapter.fit(setup.make_classifier(10), source, target, ctx)
            ctx.close()
            trained[name] = {f"{path.stem}/{key}": tensor for path in sorted((Path(folder) / name).rglob("*.pt"))
                             if path.parent.name == "checkpoints"
                             for key, tensor in _tensors(load_checkpoint(path, "stage")["state"])}
    return trained


def _tensors(value, prefix: str = ""):
    """(dotted key, tensor) of every tensor in nested dicts and lists."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{prefix}.{index}")


def _rank(rank: int, size: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    try:
        (plain, plain_reduces), (batch_norm, batch_norm_reduces) = _train(False), _train(True)
        torch.save({"plain": plain.state_dict(), "batch_norm": batch_norm.state_dict(),
                    "all_reduces": {"plain": plain_reduces, "batch_norm": batch_norm_reduces},
                    "adapted": _adapted()}, f"{out}{rank}.pt")
        with pytest.raises(ValueError, match="distributed twice"):
            distributed.distribute(plain, torch.device("cpu"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """The state dicts each of 2 gloo processes ended with: [rank 0's, rank 1's]."""
    folder = tmp_path_factory.mktemp("gloo")
    mp.spawn(_rank, args=(2, str(folder / "init"), str(folder / "rank")), nprocs=2, join=True)
    return [torch.load(folder / f"rank{rank}.pt") for rank in range(2)]


@pytest.mark.slow  # starting two processes takes 10-35 s on 2 busy cores
def test_two_processes_train_the_weights_of_one_with_the_same_global_batch(two_ranks):
    one = _train(False)[0].state_dict()
    for rank in two_ranks:
        for name, value in one.items():
            torch.testing.assert_close(rank["plain"][name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_batch_norm_running_statistics_are_the_same_on_every_rank(two_ranks):
    zero, one = (rank["batch_norm"] for rank in two_ranks)
    for name in zero:
        assert torch.equal(zero[name], one[name]), name
    # and the running mean moved from its start (the layer trained on batch statistics)
    assert zero["1.running_mean"].abs().sum() > 0


@pytest.mark.slow
def test_a_step_reduces_its_gradients_in_one_bucket_not_one_all_reduce_per_parameter(two_ranks):
    # 4 parameter tensors of a few kB: one bucket of DistributedDataParallel's reducer; with batch norm one
    # all-reduce more, of the layer's running mean and variance after the training forward
    assert [rank["all_reduces"] for rank in two_ranks] == [{"plain": 1, "batch_norm": 2}] * 2


@pytest.mark.slow
@pytest.mark.parametrize("adapter", sorted(ADAPTER_OPTIONS))
def test_every_adapter_step_keeps_the_ranks_weights_equal(two_ranks, adapter):
    # each rank trains on its half of every batch: equal checkpoints (networks, optimiser moments, streams) mean
    # every backward reduced the gradients of every network it trained (a network called around its wrapper
    # would leave the ranks apart); batch-norm running statistics included (the classifier's bottleneck,
    # CDAN's discriminator, CycleGAN's norm: batch)
    # (CycleGAN's image pools too: each holds the fakes of the global batch)
    zero, one = (rank["adapted"][adapter] for rank in two_ranks)
    assert zero.keys() == one.keys() and any("optimizer" in key for key in zero)
    for name in zero:
        assert torch.equal(zero[name], one[name]), name


# ------------------------------------------------------------------ torchrun, the whole pipeline


def torchrun(*arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`da-toolkit <arguments>` (with the toy domains) in 2 gloo processes under torchrun."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), "OMP_NUM_THREADS": "1",
           **(env or {})}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(TESTS / "toy_cli.py"), *arguments], env=env, capture_output=True, text=True,
                          timeout=600)


# 5 labeled target images per class make the toy target learnable in a few hundred steps, so that the
# accuracies of two runs compare (without them, target accuracy on the toy shift swings by 10-20 points
# between seeds); every stage still trains on the unlabeled target as well
SMALL_CYCLEGAN = {"adapter": "cyclegan", "iterations": 50, "batch_size": 4, "ngf": 4, "ndf": 4, "generator_blocks": 1,
                  "discriminator_layers": 2, "pool_size": 3, "image_grid_every": 0, "semantic_weight": 1.0,
                  "semantic_classifier_iterations": 50, "label_preservation_iterations": 20}
EVERY_STAGE = {
    "cyclegan+dann": {"pixel": SMALL_CYCLEGAN, "feature": {"adapter": "dann", "discriminator_hidden": [16]}},
    "adda": {"feature": {"adapter": "adda", "pretrain_iterations": 150, "adapt_iterations": 150,
                         "discriminator_hidden": [16]}},
}
TOLERANCE = 0.05  # target accuracy of 2 processes vs 1, both with global batches of 32 (measured: see the README)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(EVERY_STAGE))
def test_every_stage_trains_in_two_processes_into_one_run_directory(method, tmp_path):
    sections = {**EVERY_STAGE[method], "train": {"iterations": 150, "batch_size": 32, "checkpoint_every": 50},
                "data": {"target_labels_per_class": 5}}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(toy_recipe_dict(**sections)))
    one = run(load_recipe(recipe), tmp_path / "one", progress=False)

    done = torchrun("run", str(recipe), "-q", "--output", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert sorted(p.name for p in tmp_path.rglob("metrics.json")) == ["metrics.json"] * 2  # one per run
    assert done.stdout.count("target accuracy") == 1  # rank 0 reports, rank 1 is silent
    log = (tmp_path / "two" / "log.txt").read_text()
    assert log.count("run toy:") == 1 and "× 2 processes (torchrun)" in log
    assert sorted(p.stem for p in (tmp_path / "two" / "checkpoints").glob("*.pt")) == \
        sorted(p.stem for p in (tmp_path / "one" / "checkpoints").glob("*.pt"))
    assert not (tmp_path / "two" / ".lock").exists()
    assert abs(two["target_accuracy"] - one["target_accuracy"]) <= TOLERANCE, (two["target_accuracy"],
                                                                              one["target_accuracy"])


@pytest.mark.slow
def test_a_two_process_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    sections = {"feature": {"adapter": "dann", "discriminator_hidden": [16]},
                "train": {"iterations": 40, "batch_size": 16, "checkpoint_every": 10}}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(toy_recipe_dict(**sections)))
    straight = torchrun("run", str(recipe), "-q", "--output", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    stopped = torchrun("run", str(recipe), "-q", "--output", str(tmp_path / "resumed"), env={"TOY_STOP_AT": "feature:20"})
    assert stopped.returncode != 0 and "stopped at iteration 20" in stopped.stderr
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    resumed = torchrun("run", str(recipe), "-q", "--output", str(tmp_path / "resumed"), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "feature: resuming at iteration 20 of 40" in (tmp_path / "resumed" / "log.txt").read_text()
    weights = [load_checkpoint(tmp_path / name / "classifier.pt", "classifier")["state_dict"]
               for name in ("straight", "resumed")]
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name
