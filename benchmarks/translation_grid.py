"""A readable translation grid of a finished cyclegan run: source / translation / reconstruction rows
of the first N source training images, each upscaled 4× (nearest), written as a PNG.

    python benchmarks/translation_grid.py RUN_DIR OUT.png [--count 10]
"""
from __future__ import annotations

import argparse

import torch
from torchvision.utils import save_image

from da_toolkit.adapters.cyclegan import build_generators, translation_grid
from da_toolkit.data import build_domain
from da_toolkit.data.base import to_float
from da_toolkit.recipe import recipe_from_dict
from da_toolkit.rundir import RunDir
from da_toolkit.training.checkpoint import load_checkpoint, load_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("output")
    parser.add_argument("--count", type=int, default=10)
    args = parser.parse_args()
    rundir = RunDir(args.run_dir)
    recipe = recipe_from_dict(rundir.read_recipe())
    checkpoint = rundir.pixel_home(recipe.pixel_from).checkpoint("pixel")
    states = load_checkpoint(checkpoint, "stage")["state"]
    g_ab, g_ba = build_generators(recipe.pixel.options, recipe.data.channels, recipe.data.image_size)
    load_state(g_ab, states["generator_ab"], checkpoint, "generator_ab")
    load_state(g_ba, states["generator_ba"], checkpoint, "generator_ba")
    source = build_domain(recipe.data.source, recipe.data.image_size, recipe.data.channels, recipe.seed)
    with torch.inference_mode():
        real = to_float(source.images[:args.count])
        fake = g_ab.eval()(real)
        rows = (real, fake, g_ba.eval()(fake))
    save_image(translation_grid(rows, count=args.count), args.output)


if __name__ == "__main__":
    main()
