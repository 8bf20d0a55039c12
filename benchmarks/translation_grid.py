"""A readable translation grid of a finished run with a pixel stage (any pixel adapter): the first N
source test images over the rows of translations its adapter shows in the run's report (CycleGAN: the
translation; StarGAN: one row per target domain), each image upscaled 4× (nearest), written as a PNG.

    python benchmarks/translation_grid.py RUN_DIR OUT.png [--count 10]

The rows' captions are printed, top to bottom.
"""
from __future__ import annotations

import argparse
import sys

import torch
from torchvision.utils import make_grid, save_image

from da_toolkit.adapters.pixel import pixel_adapter
from da_toolkit.data import build_domain
from da_toolkit.errors import UserError
from da_toolkit.recipe import recipe_from_dict
from da_toolkit.rundir import RunDir


def grid_image(rows: list[torch.Tensor], scale: int = 4) -> torch.Tensor:
    """3×H×W float grid in [0, 1] of uint8 N×C×h×w `rows`, one row each, upscaled `scale`× (nearest)."""
    images = torch.cat(rows).float() / 255
    images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    return make_grid(images, nrow=len(rows[0]), pad_value=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("output")
    parser.add_argument("--count", type=int, default=10)
    args = parser.parse_args()
    try:
        rundir = RunDir(args.run_dir)
        recipe = recipe_from_dict(rundir.read_recipe())
        adapter = pixel_adapter(recipe)
        if adapter is None:
            raise UserError(f"{args.run_dir}: this run has no pixel stage")
        spec = recipe.data.source_test or recipe.data.source
        source = build_domain(spec, recipe.data.image_size, recipe.data.channels, recipe.seed)
        sample = source.subset(torch.arange(min(args.count, len(source)))).in_memory()
        shown = adapter.report(rundir.pixel_home(recipe.pixel_from), sample)
    except UserError as error:
        sys.exit(f"error: {error}")
    save_image(grid_image([sample.images, *[images for _, images in shown.rows]]), args.output)
    print("\n".join([f"row 1: source ({spec.name}/{spec.split})",
                     *[f"row {index + 2}: {caption}" for index, (caption, _) in enumerate(shown.rows)]]))


if __name__ == "__main__":
    main()
