"""CycleGAN pixel-level adaptation (Zhu et al., 2017), optionally with CyCADA's semantic loss.

The adapter registered as ``cyclegan``, and its parts:

    options.py      the recipe's `pixel:` keys (`CycleGANOptions`)
    training.py     the networks and one training iteration (`CycleGANTraining`; the formula is there)
    translator.py   the source set through G, cached by weights and data; f_S's label filter, the mix
    diagnostics.py  label preservation (the target-trained oracle), for metrics.json and the report

The read side of a run directory (`PixelAdapter`): the pixel-stage checkpoint holds G as
``generator_ab`` and F as ``generator_ba``; the oracle is the stage ``pixel_oracle``.
"""
from __future__ import annotations

import torch
from torch import nn

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.cyclegan.diagnostics import add_oracle_read_out, translation_diagnostics
from da_toolkit.adapters.cyclegan.options import CycleGANOptions
from da_toolkit.adapters.cyclegan.training import CycleGANTraining, build_generators, train_classifier
from da_toolkit.adapters.cyclegan.translator import CycleGANTranslator, translator_dependencies
from da_toolkit.adapters.pixel import PixelAdapter, PixelReport, translate_images
from da_toolkit.context import Context
from da_toolkit.data.base import Domain
from da_toolkit.errors import UserError
from da_toolkit.models import PatchDiscriminator
from da_toolkit.rundir import RunDir
from da_toolkit.training.checkpoint import UnreadableFile, load_checkpoint, load_state
from da_toolkit.training.loop import train_loop

GENERATOR_KEYS = {"a2b": "generator_ab", "b2a": "generator_ba"}  # pixel-stage checkpoint keys by direction

__all__ = ["CycleGAN", "CycleGANOptions"]


@ADAPTERS.register("cyclegan")
class CycleGAN(PixelAdapter):
    """CycleGAN: unpaired source<->target translators; the labeled source set is translated to target style."""

    Options = CycleGANOptions
    directions = tuple(GENERATOR_KEYS)  # a2b: G, source -> target style; b2a: F, the reverse

    @classmethod
    def check(cls, options: CycleGANOptions, image_size: int, channels: int, stage: str = "pixel") -> None:
        size, layers = image_size, options.layers_for(image_size)
        if PatchDiscriminator.output_size(size, layers) < 1:
            raise UserError(f"pixel.discriminator_layers: {layers} layers need images of at least "
                            f"{3 * 2 ** layers} px, but data.image_size is {size}; use fewer layers")
        factor = 2 ** options.downsamplings_for(size)
        if size % factor:
            raise UserError(f"data.image_size: CycleGAN's generator down-samples by {factor}, so the image size must "
                            f"be a multiple of {factor}, got {size}")

    def fit(self, source: Domain, target: Domain, ctx: Context) -> CycleGANTranslator:
        o = self.options
        semantic = None
        if o.needs_source_classifier:
            semantic = train_classifier(self.setup, source.labeled(), ctx, "pixel_classifier",
                                        o.semantic_classifier_iterations)
        training = CycleGANTraining(o, source, target, ctx, semantic)
        train_loop(ctx, "pixel", o.iterations, training.step, training.state())
        self.translator = CycleGANTranslator(training.g_ab, ctx, o, semantic)
        return self.translator

    def diagnostics(self, source: Domain, translated: Domain, ctx: Context) -> dict:
        """Label preservation and the label filter's report (`translation_diagnostics`)."""
        return translation_diagnostics(self.setup, self.options.label_preservation_iterations, source, translated,
                                       getattr(self, "translator", None), ctx)

    # -- read side ------------------------------------------------------------------------------
    def translator_keys(self, pixel: dict, train: dict) -> dict:
        """`translator_dependencies` of the pixel section."""
        return translator_dependencies(pixel, train, self.options.semantic_weight)

    def load_generator(self, home: RunDir, direction: str) -> nn.Module:
        """G (a2b) or F (b2a) from the pixel-stage checkpoint in `home`, on the CPU, read safely."""
        checkpoint = home.checkpoint("pixel")
        if not checkpoint.exists():
            raise UserError(f"{home}: no pixel-stage checkpoint ({checkpoint}); has its pixel stage started?")
        generator = build_generators(self.options, self.setup.channels, self.setup.image_size)[0]
        states = load_checkpoint(checkpoint, "stage")["state"]
        if not isinstance(states, dict) or GENERATOR_KEYS[direction] not in states:
            raise UnreadableFile(f"{checkpoint}: not a CycleGAN pixel-stage checkpoint "
                                 f"(no {GENERATOR_KEYS[direction]})")
        load_state(generator, states[GENERATOR_KEYS[direction]], checkpoint, f"generator ({direction})")
        return generator

    def report(self, home: RunDir, sample: Domain) -> PixelReport:
        """`sample` translated by G, and the label-preservation oracle's read-out of it when the run trained one."""
        sample = sample.in_memory()
        translated = translate_images(self.load_generator(home, "a2b"), sample.images, torch.device("cpu"), 256)
        out = PixelReport([("translation into target style by the run's CycleGAN (G)", translated)],
                          {"images": len(sample)})
        return add_oracle_read_out(out, self.setup, home, sample, translated, "translated source images")
