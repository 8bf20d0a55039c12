"""`translate_folder`: the `da-toolkit translate` command's library call — a folder of images
through the trained CycleGAN of a run directory."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from da_toolkit.adapters.cyclegan import build_generators, translate_images
from da_toolkit.context import resolve_device
from da_toolkit.data.base import conform
from da_toolkit.data.files import find_images, read_rgb
from da_toolkit.errors import UserError
from da_toolkit.recipe import recipe_from_dict
from da_toolkit.rundir import RunDir
from da_toolkit.training.checkpoint import UnreadableFile, load_checkpoint, load_state
from da_toolkit.training.precision import Precision, resolve_precision

GENERATOR_KEYS = {"a2b": "generator_ab", "b2a": "generator_ba"}  # pixel-stage checkpoint keys by direction


def load_generator(rundir: RunDir, recipe, direction: str = "a2b") -> torch.nn.Module:
    """The trained CycleGAN generator of a run (G for a2b, F for b2a), on the CPU, read safely."""
    if recipe.pixel is None or recipe.pixel.adapter != "cyclegan":
        raise UserError(f"{rundir}: this run has no cyclegan pixel stage, so there is no translator to use")
    checkpoint = rundir.pixel_home(recipe.pixel_from).checkpoint("pixel")
    if not checkpoint.exists():
        raise UserError(f"{rundir}: no pixel-stage checkpoint ({checkpoint}); has its pixel stage started?")
    generator = build_generators(recipe.pixel.options, recipe.data.channels, recipe.data.image_size)[0]
    states = load_checkpoint(checkpoint, "stage")["state"]
    if not isinstance(states, dict) or GENERATOR_KEYS[direction] not in states:
        raise UnreadableFile(f"{checkpoint}: not a CycleGAN pixel-stage checkpoint (no {GENERATOR_KEYS[direction]})")
    load_state(generator, states[GENERATOR_KEYS[direction]], checkpoint, f"generator ({direction})")
    return generator


def translation_precision(requested: str, device: torch.device) -> Precision:
    """The run's `train.precision` resolved on this device; fp32, with a warning, where it cannot run
    here (a run trained in fp16 on a GPU, translated on a CPU)."""
    try:
        return Precision(resolve_precision(requested, device), device)
    except UserError as error:
        warnings.warn(f"{error}; translating in fp32, so the images may differ slightly from the run's own "
                      f"translations")
        return Precision("fp32", device)


def translate_folder(run_dir: Path, input_dir: Path, output_dir: Path, direction: str = "a2b",
                     batch_size: int = 64) -> int:
    """Translate every image under `input_dir` (recursively) with the CycleGAN of `run_dir`.

    Images are conformed to the run's image size and channels; each is written as PNG to the same
    relative path under `output_dir`. `direction` a2b is source -> target style (the generator G),
    b2a the reverse (F). Runs on a GPU when there is one, in the run's `train.precision` resolved on
    that device (as the run translated its source set). Returns the number of images written.
    """
    rundir, input_dir, output_dir = RunDir(run_dir), Path(input_dir), Path(output_dir)
    if direction not in GENERATOR_KEYS:
        raise UserError(f"--direction: expected a2b or b2a, got {direction!r}")
    rundir.require("recipe.yaml")
    recipe = recipe_from_dict(rundir.read_recipe())
    generator = load_generator(rundir, recipe, direction)
    if not input_dir.is_dir():
        raise UserError(f"--input: {input_dir} is not a folder")
    paths = [Path(path) for path in find_images(input_dir)]
    if not paths:
        raise UserError(f"--input: no images ({', '.join(IMG_EXTENSIONS)}) under {input_dir}")

    size, channels = recipe.data.image_size, recipe.data.channels
    device = resolve_device("auto")
    precision = translation_precision(recipe.train.precision, device)
    generator.to(device)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        images = torch.cat([conform(read_rgb(path)[None], size, channels) for path in chunk])
        for path, image in zip(chunk, translate_images(generator, images, device, batch_size, precision)):
            destination = (output_dir / path.relative_to(input_dir)).with_suffix(".png")
            destination.parent.mkdir(parents=True, exist_ok=True)
            pixels = image.permute(1, 2, 0).numpy()
            Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels).save(destination)
    return len(paths)
