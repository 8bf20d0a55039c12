"""The recipe's `pixel:` keys for `adapter: cyclegan`, with their checks and the image-size defaults."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from da_toolkit.errors import UserError
from da_toolkit.models.cyclegan import small_image_defaults


@dataclass
class CycleGANOptions:
    """The recipe's `pixel:` keys for `adapter: cyclegan`. Defaults suit a GPU and 28-32 px digits."""

    iterations: int = 20000  # generator/discriminator updates (one source and one target batch each)
    batch_size: int = 32  # the reference uses 1 at 256 px; small digit images train well with 16-64
    ngf: int = 64  # generator width (first conv)
    ndf: int = 64  # discriminator width (first conv)
    generator_blocks: int | None = None  # residual blocks; None: 6 for images up to 128 px, else 9 (the reference)
    generator_downsamplings: int | None = None  # None: 1 for images up to 64 px, else 2 (the reference)
    discriminator_layers: int | None = None  # PatchGAN stride-2 layers; None: 2 up to 64 px, else 3 (70×70 patches)
    norm: Literal["instance", "batch"] = "instance"
    gan_loss: Literal["lsgan", "vanilla"] = "lsgan"  # least squares, or the original log loss
    lambda_a: float = 10.0  # cycle weight A -> B -> A
    lambda_b: float = 10.0  # cycle weight B -> A -> B
    lambda_identity: float = 0.5  # identity weight, relative to lambda_a/b; 0 skips the identity passes
    semantic_weight: float = 1.0  # CyCADA semantic-consistency weight; 0: plain CycleGAN
    semantic_targets: Literal["predicted", "labels"] = "predicted"  # G(a)'s target: f_S(a)'s class (CyCADA) or y_a
    semantic_classifier_iterations: int = 2000  # training of f_S on labeled source (stage pixel_classifier)
    label_filter: Literal["drop", "off"] = "drop"  # drop translated images whose f_S class disagrees with the label
    agreement_warning: float = 0.7  # warn when f_S agrees with fewer than this fraction of translated labels
    feature_data: Literal["both", "translated", "source"] = "both"  # what the feature stage trains on
    translated_fraction: float = 0.5  # feature_data both: share of translated images in the mixed set
    pool_size: int = 50  # history of generated images per direction; 0 disables it
    lr: float = 2e-4
    beta1: float = 0.5
    lr_policy: Literal["linear", "step", "cosine"] = "linear"
    decay_start: float = 0.5  # linear: LR constant, then -> 0; step: x0.1 every decay_start·iterations; cosine: unused
    image_grid_every: int = 1000  # TensorBoard image grid of translations every N iterations; 0: never
    translate_batch_size: int = 256  # batch size when translating the source set
    label_preservation_iterations: int = 1000  # the target-label oracle of the diagnostic (stage pixel_oracle); 0: off

    def __post_init__(self):
        at_least = {"iterations": 0, "batch_size": 1, "ngf": 1, "ndf": 1,
                    "semantic_classifier_iterations": 0, "pool_size": 0, "image_grid_every": 0,
                    "translate_batch_size": 1, "label_preservation_iterations": 0, "lambda_a": 0, "lambda_b": 0,
                    "lambda_identity": 0, "semantic_weight": 0}
        for key, low in (("generator_blocks", 0), ("generator_downsamplings", 0), ("discriminator_layers", 1)):
            if getattr(self, key) is not None:
                at_least[key] = low
        for key, low in at_least.items():
            if getattr(self, key) < low:
                raise UserError(f"pixel.{key}: must be {low} or more, got {getattr(self, key)}")
        for key in ("lr", "beta1"):
            if not 0 < getattr(self, key) < 1:
                raise UserError(f"pixel.{key}: must lie strictly between 0 and 1, got {getattr(self, key)}")
        for key in ("decay_start", "agreement_warning", "translated_fraction"):
            if not 0 <= getattr(self, key) <= 1:
                raise UserError(f"pixel.{key}: a fraction in [0, 1], got {getattr(self, key)}")

    def blocks_for(self, image_size: int) -> int:
        if self.generator_blocks is not None:
            return self.generator_blocks
        return 6 if image_size <= 128 else 9

    def downsamplings_for(self, image_size: int) -> int:
        if self.generator_downsamplings is not None:
            return self.generator_downsamplings
        return small_image_defaults(image_size)["downsamplings"]

    def layers_for(self, image_size: int) -> int:
        if self.discriminator_layers is not None:
            return self.discriminator_layers
        return small_image_defaults(image_size)["discriminator_layers"]

    @property
    def needs_source_classifier(self) -> bool:
        """f_S is trained when the semantic loss or the label filter uses it."""
        return self.semantic_weight > 0 or self.label_filter != "off"
