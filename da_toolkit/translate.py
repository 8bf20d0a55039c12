"""`translate_folder`: the `da-toolkit translate` command's library call — a folder of images
through the trained translator of a run directory (loaded by its pixel adapter)."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from da_toolkit.adapters.pixel import pixel_adapter, translate_images
from da_toolkit.context import resolve_device
from da_toolkit.data.base import UNLABELED
from da_toolkit.data.files import FileDomain, find_images
from da_toolkit.errors import UserError
from da_toolkit.recipe import recipe_from_dict
from da_toolkit.rundir import RunDir
from da_toolkit.training.precision import Precision, resolve_precision


def load_generator(rundir: RunDir, recipe, direction: str | None) -> torch.nn.Module:
    """The trained translator of `direction` (None: the adapter's first, source -> target style) of a run
    (of the pixel stage it shares through `pixel_from`), on the CPU, loaded by the run's pixel adapter."""
    adapter = pixel_adapter(recipe)
    if adapter is None:
        raise UserError(f"{rundir}: this run has no pixel stage, so there is no translator to use")
    if not adapter.directions:
        raise UserError(f"{rundir}: the {recipe.pixel.adapter} pixel adapter keeps no translator to use")
    direction = adapter.directions[0] if direction is None else direction
    if direction not in adapter.directions:
        raise UserError(f"--direction: the {recipe.pixel.adapter} translator goes {' or '.join(adapter.directions)}, "
                        f"not {direction!r}")
    return adapter.load_generator(rundir.pixel_home(recipe.pixel_from), direction)


def first_direction(run_dir: Path) -> str | None:
    """The first of the directions of a run's translator (source -> target style); None without one."""
    rundir = RunDir(run_dir)
    rundir.require("recipe.yaml")
    adapter = pixel_adapter(recipe_from_dict(rundir.read_recipe()))
    return adapter.directions[0] if adapter is not None and adapter.directions else None


def translation_precision(requested: str, device: torch.device) -> Precision:
    """The run's `train.precision` resolved on this device; fp32, with a warning, where it cannot run
    here (a run trained in fp16 on a GPU, translated on a CPU)."""
    try:
        return Precision(resolve_precision(requested, device), device)
    except UserError as error:
        warnings.warn(f"{error}; translating in fp32, so the images may differ slightly from the run's own "
                      f"translations")
        return Precision("fp32", device)


def translate_folder(run_dir: Path, input_dir: Path, output_dir: Path, direction: str | None = None,
                     batch_size: int = 64, workers: int | None = None) -> int:
    """Translate every image under `input_dir` (recursively) with the trained translator of `run_dir`.

    Images are decoded at the run's image size and channels as its folder domains are, a batch at a
    time (by `workers` processes, default the run's `train.workers`; memory holds a few batches); each is written as PNG to the same
    relative path under `output_dir`. `direction` is one of the pixel adapter's `directions`, None
    its first (a two-domain translator: a2b is source -> target style, b2a the reverse; a multi-domain
    one: the name of the domain to translate into). Runs on a GPU when
    there is one, in the run's `train.precision` resolved on that device (as the run translated its
    source set). Returns the number of images written.
    """
    rundir, input_dir, output_dir = RunDir(run_dir), Path(input_dir), Path(output_dir)
    rundir.require("recipe.yaml")
    recipe = recipe_from_dict(rundir.read_recipe())
    generator = load_generator(rundir, recipe, direction)
    if not input_dir.is_dir():
        raise UserError(f"--input: {input_dir} is not a folder")
    paths = [Path(path) for path in find_images(input_dir)]
    if not paths:
        raise UserError(f"--input: no images ({', '.join(IMG_EXTENSIONS)}) under {input_dir}")

    size, channels = recipe.data.image_size, recipe.data.channels
    # decoded as the run read its folder domains (read_image), a batch at a time by the run's workers
    files = FileDomain(paths, torch.full((len(paths),), UNLABELED), "input", [], size, channels,
                       recipe.train.workers if workers is None else workers)
    device = resolve_device("auto")
    precision = translation_precision(recipe.train.precision, device)
    generator.to(device)
    for start, images in zip(range(0, len(paths), batch_size), files.chunks(batch_size)):
        chunk = paths[start:start + batch_size]
        for path, image in zip(chunk, translate_images(generator, images, device, batch_size, precision)):
            destination = (output_dir / path.relative_to(input_dir)).with_suffix(".png")
            destination.parent.mkdir(parents=True, exist_ok=True)
            pixels = image.permute(1, 2, 0).numpy()
            Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels).save(destination)
    return len(paths)
