"""The pixel-stage interface: what a pixel adapter offers a run, and the readers of a finished run.

A run (pipeline.py) calls, on an adapter built as ``Adapter(options, setup)``:

* ``fit(source, target, ctx) -> Translator``; the translator's ``translate(domain)`` returns the
  labeled domain the feature stage trains on, in target style (its cache format is the adapter's);
* ``diagnostics(source, translated, ctx)``: the adapter's entries for metrics.json.

The readers of a finished run call the adapter's *read side*, so that none of them names an
adapter's checkpoint keys, options or files:

* ``da-toolkit translate``: ``directions`` and ``load_generator(home, direction)``, a module mapping
  float images in [-1, 1] to their translation (run it on uint8 images with `translate_images`);
* ``da-toolkit report``: ``report(home, sample)``, a `PixelReport` of translations and diagnostics;
* ``da-toolkit compare``: ``translator_keys(pixel, train)`` and ``translator_data(data)``, what of the
  recipe's pixel, train and data sections the trained translator depends on (cells that agree on it
  share one translator; `translator_data` says whether that includes the task's datasets).

`home` is the `RunDir` that holds the pixel stage (the run's own, or its `pixel_from`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.base import Adapter, AdapterSetup
from da_toolkit.context import Context
from da_toolkit.data.base import Domain, device_batches, to_uint8
from da_toolkit.errors import UserError
from da_toolkit.rundir import RunDir
from da_toolkit.training.precision import Precision


class Translator(Protocol):
    def translate(self, dataset: Domain) -> Domain: ...


@dataclass
class PixelReport:
    """What a pixel adapter shows in a run's report, for a sample of source images.

    rows:   (caption, uint8 translations of the whole sample, in its order), one per translation
            the adapter shows (a direction, a target domain);
    numbers: the adapter's entries for report.json;
    text:   sentences for the page (plain text);
    marks:  per sample image, whether the adapter's diagnostic reads its label in the first row's
            translation (None: no such diagnostic).
    """

    rows: list[tuple[str, torch.Tensor]]
    numbers: dict = field(default_factory=dict)
    text: list[str] = field(default_factory=list)
    marks: list[bool] | None = None


class PixelAdapter(Adapter):
    kind = "pixel"
    directions: tuple[str, ...] = ()  # what `load_generator` translates; the first is source -> target style

    def fit(self, source: Domain, target: Domain, ctx: Context) -> Translator:
        raise NotImplementedError

    def diagnostics(self, source: Domain, translated: Domain, ctx: Context) -> dict:
        """Entries for metrics.json about how the translation went (none by default)."""
        return {}

    # -- read side ------------------------------------------------------------------------------
    def translator_keys(self, pixel: dict, train: dict) -> dict:
        """What of the resolved recipe's `pixel` and `train` sections the trained translator depends on
        (besides `translator_data`, seed, classifier, device and precision, which `compare` always
        compares): by default the whole pixel section."""
        return {"pixel": pixel}

    def translator_data(self, data: dict) -> dict:
        """What of the resolved recipe's `data` section (without target_labels_per_class, which no
        translator reads) the translator and the pixel stages stored with it depend on: by default all
        of it, so that only the cells of one task share a translator. An adapter whose translator serves
        several tasks leaves out the task's datasets, and names its per-task stages by them."""
        return data

    def load_generator(self, home: RunDir, direction: str) -> nn.Module:
        """The trained translator of `direction` in the run directory `home`, on the CPU, read safely."""
        raise UserError(f"{home}: this run's pixel adapter cannot load its translator from a run directory")

    def report(self, home: RunDir, sample: Domain) -> PixelReport:
        """`sample` translated by the translator of the first direction; no diagnostics by default."""
        if not self.directions:
            return PixelReport([], text=["This pixel adapter keeps no translator to show."])
        generator = self.load_generator(home, self.directions[0])
        return PixelReport([(f"translation ({self.directions[0]})",
                             translate_images(generator, sample, torch.device("cpu"), 256))])


def pixel_adapter(recipe) -> PixelAdapter | None:
    """The pixel adapter of `recipe`, built from its options and setup; None without a pixel stage."""
    if recipe.pixel is None:
        return None
    return ADAPTERS.get(recipe.pixel.adapter, "pixel.adapter")(recipe.pixel.options, AdapterSetup.from_recipe(recipe))


@torch.inference_mode()
def translate_images(generator: nn.Module, images, device: torch.device, batch_size: int,
                     precision: Precision | None = None) -> torch.Tensor:
    """uint8 N×C×H×W (a tensor or a domain's images) -> uint8 N×C×H×W through `generator` in eval mode,
    batch by batch, under `precision`'s autocast (None: fp32)."""
    was_training = generator.training
    generator.eval()
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    out = []
    for batch in device_batches(images, device, batch_size):
        with autocast():
            out.append(to_uint8(generator(batch)).cpu())
    generator.train(was_training)
    return torch.cat(out) if out else torch.empty((0, *images.shape[1:]) if isinstance(images, torch.Tensor) else
                                                  (0, *images.image_shape), dtype=torch.uint8)
