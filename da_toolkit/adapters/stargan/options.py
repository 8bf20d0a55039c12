"""The recipe's `pixel:` keys for `adapter: stargan`, with their checks and the image-size defaults."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from da_toolkit.data import DATASETS
from da_toolkit.errors import UserError
from da_toolkit.models.cyclegan import small_image_defaults


@dataclass
class StarGANOptions:
    """The recipe's `pixel:` keys for `adapter: stargan`. Defaults: the authors' (yunjey/stargan), with the
    networks sized to 28-32 px digits as the CycleGAN's are."""

    # the datasets (names from `da-toolkit list`; each its whole training split, whatever its role in the
    # recipe) the translator learns, in domain-label order; the recipe's sources and target are added at the
    # end, as the run has them, when missing; []: source and target only. Listing both, with
    # semantic_weight 0, makes one translator serve every task over the list (compare shares it)
    domains: list[str] = field(default_factory=list)
    iterations: int = 20000  # discriminator updates (the authors' num_iters); G is updated every n_critic-th
    n_critic: int = 5  # discriminator updates per generator update
    batch_size: int = 16  # images of EACH domain per iteration (the authors' batch: 16)
    ngf: int = 64  # generator width (first conv; the authors' g_conv_dim)
    ndf: int = 64  # discriminator width (first conv; d_conv_dim)
    generator_blocks: int = 6  # residual blocks (g_repeat_num)
    generator_downsamplings: int | None = None  # None: 1 for images up to 64 px, else 2 (the authors')
    discriminator_layers: int | None = None  # stride-2 convs; None: 2 for images up to 64 px, else 6 (the authors')
    lambda_cls: float = 1.0  # domain classification weight
    lambda_rec: float = 10.0  # reconstruction weight
    lambda_gp: float = 10.0  # gradient penalty weight
    lr: float = 1e-4  # both G and D (g_lr, d_lr)
    beta1: float = 0.5
    beta2: float = 0.999
    decay_start: float = 0.5  # LR constant for this fraction of the iterations, then linearly to 0 (the authors: ½)
    semantic_weight: float = 1.0  # CyCADA semantic consistency with f_S (not in StarGAN, as the cyclegan's); 0: off
    semantic_classifier_iterations: int = 2000  # training of f_S on labeled source (stage pixel_classifier_<source>)
    label_filter: Literal["drop", "off"] = "drop"  # drop translated images whose f_S class disagrees with the label
    agreement_warning: float = 0.7  # warn when f_S agrees with fewer than this fraction of translated labels
    feature_data: Literal["both", "translated", "source"] = "both"  # what the feature stage trains on
    translated_fraction: float = 0.5  # feature_data both: share of translated images in the mixed set
    image_grid_every: int = 1000  # TensorBoard grid of translations into every domain every N iterations; 0: never
    translate_batch_size: int = 256  # batch size when translating the source set
    # the target-label oracle of the diagnostic (stage pixel_oracle_<target>); 0: off
    label_preservation_iterations: int = 1000

    def __post_init__(self):
        at_least = {"iterations": 0, "n_critic": 1, "batch_size": 1, "ngf": 1, "ndf": 1, "generator_blocks": 0,
                    "semantic_classifier_iterations": 0, "image_grid_every": 0, "translate_batch_size": 1,
                    "label_preservation_iterations": 0, "lambda_cls": 0, "lambda_rec": 0, "lambda_gp": 0,
                    "semantic_weight": 0}
        for key, low in (("generator_downsamplings", 0), ("discriminator_layers", 1)):
            if getattr(self, key) is not None:
                at_least[key] = low
        for key, low in at_least.items():
            if getattr(self, key) < low:
                raise UserError(f"pixel.{key}: must be {low} or more, got {getattr(self, key)}")
        for key in ("lr", "beta1", "beta2"):
            if not 0 < getattr(self, key) < 1:
                raise UserError(f"pixel.{key}: must lie strictly between 0 and 1, got {getattr(self, key)}")
        for key in ("decay_start", "agreement_warning", "translated_fraction"):
            if not 0 <= getattr(self, key) <= 1:
                raise UserError(f"pixel.{key}: a fraction in [0, 1], got {getattr(self, key)}")
        if len(set(self.domains)) != len(self.domains):
            raise UserError(f"pixel.domains: a domain is listed twice: {self.domains}")
        for name in self.domains:
            DATASETS.get(name, "pixel.domains")

    def domain_names(self, *names: str) -> list[str]:
        """The translator's domains in label order: `domains`, then the recipe's sources and target (`names`)
        if missing."""
        return [*self.domains, *(name for name in dict.fromkeys(names) if name not in self.domains)]

    def downsamplings_for(self, image_size: int) -> int:
        if self.generator_downsamplings is not None:
            return self.generator_downsamplings
        return small_image_defaults(image_size)["downsamplings"]

    def layers_for(self, image_size: int) -> int:
        if self.discriminator_layers is not None:
            return self.discriminator_layers
        return small_image_defaults(image_size)["discriminator_layers"] if image_size <= 64 else 6

    @property
    def needs_source_classifier(self) -> bool:
        """f_S is trained when the semantic loss or the label filter uses it."""
        return self.semantic_weight > 0 or self.label_filter != "off"
