"""Shared fixtures: tiny two-domain toy datasets, registered once, a recipe writer, the real-data root."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from da_toolkit.data import DATASETS, DomainDataset

# the real MNIST/USPS files: $DA_TOOLKIT_DATA like the program itself, else the shared copy beside the checkout
SHARED_DATA = Path(os.environ.get("DA_TOOLKIT_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
needs_shared_data = pytest.mark.skipif(not ((SHARED_DATA / "MNIST").is_dir() and (SHARED_DATA / "usps.t.bz2").is_file()),
                                       reason=f"real data not found in {SHARED_DATA} (set DA_TOOLKIT_DATA)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: slower tests, left out of `make test`; run them with `make test-slow`")
    config.addinivalue_line("markers", "fuzz: the long schema-driven fuzz (tests/test_fuzz.py), run by `make fuzz`")


def toy_digits(split: str, shift: int, count: int = 400) -> DomainDataset:
    """Ten learnable classes on 8×8 grey images: class c lights row c % 8 and column 4 * (c // 8),
    plus noise; `shift` brightens the background (the domain shift)."""
    generator = torch.Generator().manual_seed(0 if split == "train" else 1)
    labels = torch.arange(count) % 10
    images = torch.rand(count, 1, 8, 8, generator=generator) * 60 + shift
    for index, label in enumerate(labels.tolist()):
        images[index, 0, label % 8, :] += 150
        images[index, 0, :, 4 * (label // 8)] += 150
    return DomainDataset(images.clamp(0, 255).to(torch.uint8), labels, f"toy{shift}/{split}")


if "toy_source" not in DATASETS:
    DATASETS.register("toy_source", "test-only toy domain")(lambda split, **_: toy_digits(split, 0))
    DATASETS.register("toy_target", "test-only toy domain, brighter")(lambda split, **_: toy_digits(split, 60))
    DATASETS.register("toy_third", "test-only toy domain, brightest")(lambda split, **_: toy_digits(split, 120))
    DATASETS.register("toy_five", "test-only toy domain of 5 classes")(
        lambda split, **_: DomainDataset(toy_digits(split, 0).images, toy_digits(split, 0).labels % 5, "toy5", 5))


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny networks gain nothing from intra-op threads, and when another process keeps the cores
    busy, OpenMP threads waiting on each other make each small op ~50× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_recipe_dict(**sections) -> dict:
    """A minimal recipe on the toy domains (16×16 grey, lenet), updated by `sections`."""
    recipe = {
        "name": "toy",
        "data": {"source": {"name": "toy_source"}, "target": {"name": "toy_target"},
                 "target_test": {"name": "toy_target", "split": "test"}, "image_size": 16, "channels": 1},
        "classifier": {"backbone": "lenet", "bottleneck_dim": 32},
        "train": {"iterations": 60, "batch_size": 32, "log_every": 10, "checkpoint_every": 20},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


@pytest.fixture
def write_recipe(tmp_path):
    """write_recipe(**sections) -> path of a toy recipe YAML in tmp_path."""
    def write(name: str = "recipe.yaml", **sections) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(toy_recipe_dict(**sections)))
        return path

    return write


@pytest.fixture(scope="session")
def toy_source_run(tmp_path_factory) -> Path:
    """A finished source_only run on the toy recipe: the source classifier a source-free method (an adapter
    whose options have `source_checkpoint`, e.g. shot) starts from, for any toy recipe's classifier."""
    from da_toolkit.pipeline import run
    from da_toolkit.recipe import recipe_from_dict

    run_dir = tmp_path_factory.mktemp("toy_source") / "run"
    run(recipe_from_dict(toy_recipe_dict(name="toy_source_only")), run_dir, progress=False)
    return run_dir
