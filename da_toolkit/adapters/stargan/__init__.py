"""StarGAN pixel-level adaptation (Choi et al., CVPR 2018): one translator G(x, c) for every domain of
`pixel.domains` (with the recipe's source and target), optionally with CyCADA's semantic loss.

The adapter registered as ``stargan``, and its parts:

    options.py      the recipe's `pixel:` keys (`StarGANOptions`)
    networks.py     G(x, c) and the discriminator with its source and domain heads
    training.py     one training iteration (`StarGANTraining`; the formula is there)

The translation cache, f_S's label filter and the mix with the raw source are the CycleGAN's
(`CycleGANTranslator`, fed G(·, c_target)); so is the label-preservation oracle.

The read side of a run directory: the pixel-stage checkpoint holds G as ``generator``; a direction
is the name of the domain to translate into (`directions`: the target first, then the others).

One translator, many tasks (`serves_every_task`): when `pixel.domains` lists the recipe's source and
target and the semantic loss is off, G and D are trained on the listed datasets alone, each its whole
training split whatever its role, with no classifier of the task: the same networks for every task
over the list. `compare` then gives the cells of every such task one translator per seed
(`translator_data` leaves the datasets' names out of the sharing key). What is the task's own stays
the task's: f_S (for the label filter) and the label-preservation oracle are stages named by the
dataset they learn (``pixel_classifier_<source>``, ``pixel_oracle_<target>``), so a run sharing
another task's translator (`pixel_from`) trains its own beside it, and its source is translated by
G(·, c = its target). With the semantic loss on, G learns from f_S, trained on the task's labeled
source, so the translator is the task's; f_S is never trained on the union of the domains, whose
labels include other tasks' targets.

Several sources (data.extra_sources): each is a domain of G of its own, and the merged labeled set is
translated by G(·, c = the target), so each source goes into the target's style; f_S learns the merged
set (``pixel_classifier_<source>+<source>``).
"""
from __future__ import annotations

import torch
from torch import nn

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.cyclegan.diagnostics import add_oracle_read_out, translation_diagnostics
from da_toolkit.adapters.cyclegan.training import train_classifier
from da_toolkit.adapters.cyclegan.translator import CycleGANTranslator, translator_dependencies
from da_toolkit.adapters.pixel import PixelAdapter, PixelReport, translate_images
from da_toolkit.adapters.stargan.networks import ConditionedGenerator
from da_toolkit.adapters.stargan.options import StarGANOptions
from da_toolkit.adapters.stargan.training import StarGANTraining, build_generator
from da_toolkit.context import Context
from da_toolkit.data import Domain
from da_toolkit.errors import UserError
from da_toolkit.rundir import RunDir
from da_toolkit.training.checkpoint import UnreadableFile, load_checkpoint, load_state
from da_toolkit.training.loop import train_loop


__all__ = ["StarGAN", "StarGANOptions"]


@ADAPTERS.register("stargan")
class StarGAN(PixelAdapter):
    """StarGAN: one translator for every domain; the labeled source set is translated into the target's style."""

    Options = StarGANOptions

    @classmethod
    def check(cls, options: StarGANOptions, image_size: int, channels: int, stage: str = "pixel") -> None:
        layers, factor = options.layers_for(image_size), 2 ** options.downsamplings_for(image_size)
        if image_size % 2 ** layers:
            raise UserError(f"pixel.discriminator_layers: {layers} stride-2 layers need an image size that is a "
                            f"multiple of {2 ** layers} (the domain head's kernel is size / 2^layers), but "
                            f"data.image_size is {image_size}; use fewer layers")
        if image_size % factor:
            raise UserError(f"data.image_size: StarGAN's generator down-samples by {factor}, so the image size must "
                            f"be a multiple of {factor}, got {image_size}")

    @property
    def domains(self) -> list[str]:
        """The translator's domains in label order (`StarGANOptions.domain_names`)."""
        return self.options.domain_names(*self.setup.domain_names)

    @property
    def directions(self) -> tuple[str, ...]:
        """The domains G translates into: the recipe's target first (source -> target style), then the others."""
        target = self.setup.target_name
        return (target, *(name for name in self.domains if name != target))

    @property
    def serves_every_task(self) -> bool:
        """Whether the trained G and D are the same whichever of `pixel.domains` are the recipe's source and
        target: both are listed (so the domains, their order and their images do not depend on the task)
        and the semantic loss is off (with it, G learns from f_S, trained on the task's labeled source)."""
        return set(self.setup.domain_names) <= set(self.options.domains) and self.options.semantic_weight == 0

    @property
    def classifier_stage(self) -> str:
        """f_S's training stage, named by the source(s) it learns (module docstring)."""
        return f"pixel_classifier_{'+'.join(self.setup.source_names)}"

    @property
    def oracle_stage(self) -> str:
        """The label-preservation oracle's training stage, named by the target it learns."""
        return f"pixel_oracle_{self.setup.target_name}"

    def training_domains(self, source: Domain, target: Domain) -> list[Domain]:
        """The domains in label order: a listed one is its dataset's whole training split, whatever its role
        in the recipe; the recipe's target and sources when not listed, as the run has them (several
        sources, merged in `source`, each built again on its own: each is a domain of its own for G)."""
        sources = self.setup.source_names
        given = {**({sources[0]: source} if len(sources) == 1 else {}), self.setup.target_name: target}
        return [self.setup.load_domain(name) if name in self.options.domains else given[name] if name in given
                else self.setup.load_source(sources.index(name)) for name in self.domains]

    def fit(self, source: Domain, target: Domain, ctx: Context) -> CycleGANTranslator:
        o = self.options
        semantic = None
        if o.needs_source_classifier:
            semantic = train_classifier(self.setup, source.labeled(), ctx, self.classifier_stage,
                                        o.semantic_classifier_iterations)
        training = StarGANTraining(o, self.training_domains(source, target), ctx, semantic)
        train_loop(ctx, "pixel", o.iterations, training.step, training.state())
        generator = ConditionedGenerator(training.generator, self.domains.index(self.directions[0]))
        self.translator = CycleGANTranslator(generator, ctx, o, semantic, f"stargan:{self.directions[0]}")
        return self.translator

    def diagnostics(self, source: Domain, translated: Domain, ctx: Context) -> dict:
        """Label preservation and the label filter's report (`translation_diagnostics`)."""
        return translation_diagnostics(self.setup, self.options.label_preservation_iterations, source, translated,
                                       getattr(self, "translator", None), ctx, self.oracle_stage)

    # -- read side ------------------------------------------------------------------------------
    def translator_keys(self, pixel: dict, train: dict) -> dict:
        """`translator_dependencies` of the pixel section, with the domains in label order (the recipe's
        source and target included)."""
        keys = translator_dependencies(pixel, train, self.options.semantic_weight)
        keys["pixel"]["domains"] = self.domains
        return keys

    def translator_data(self, data: dict) -> dict:
        """All of `data` for a translator of the task; for one that `serves_every_task`, the source and target
        specs without their dataset names (a dataset's name is in the stages it trains, the domains' in
        `translator_keys`), and no test split (nothing of the pixel stage learns from one)."""
        def unnamed(spec: dict) -> dict:
            return {key: value for key, value in spec.items() if key != "name"}

        if not self.serves_every_task:
            return data
        out = {key: value for key, value in data.items() if key not in ("target_test", "source_test")}
        out.update(source=unnamed(data["source"]), target=unnamed(data["target"]),
                   extra_sources=[unnamed(spec) for spec in data.get("extra_sources", [])])
        return out

    def load_generator(self, home: RunDir, direction: str) -> nn.Module:
        """G(·, c) into the domain `direction` from the pixel-stage checkpoint in `home`, on the CPU, read safely."""
        checkpoint = home.checkpoint("pixel")
        if not checkpoint.exists():
            raise UserError(f"{home}: no pixel-stage checkpoint ({checkpoint}); has its pixel stage started?")
        generator = build_generator(self.options, self.setup.channels, self.setup.image_size, len(self.domains))
        states = load_checkpoint(checkpoint, "stage")["state"]
        if not isinstance(states, dict) or "generator" not in states:
            raise UnreadableFile(f"{checkpoint}: not a StarGAN pixel-stage checkpoint (no generator)")
        load_state(generator, states["generator"], checkpoint, "StarGAN generator")
        return ConditionedGenerator(generator, self.domains.index(direction))

    def report(self, home: RunDir, sample: Domain) -> PixelReport:
        """`sample` translated into every domain (the target first), and the label-preservation oracle's
        read-out of the translation into the target when the run trained one."""
        sample = sample.in_memory()
        rows = [(f"translation into {name} by the run's StarGAN",
                 translate_images(self.load_generator(home, name), sample.images, torch.device("cpu"), 256))
                for name in self.directions]
        out = PixelReport(rows, {"images": len(sample), "domains": self.domains})
        return add_oracle_read_out(out, self.setup, home, sample, rows[0][1],
                                   f"source images translated into {self.directions[0]}", self.oracle_stage)
