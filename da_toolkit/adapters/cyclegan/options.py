"""The recipe's `pixel:` keys for `adapter: cyclegan`, with their checks and the image-size defaults."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from da_toolkit.models.cyclegan import small_image_defaults
from da_toolkit.bounds import FRACTION, NON_NEGATIVE, WIDTH, Range

OPEN_UNIT = Range(0, 1, low_open=True, high_open=True)


@dataclass
class CycleGANOptions:
    """The recipe's `pixel:` keys for `adapter: cyclegan`. Defaults suit a GPU and 28-32 px digits."""

    # generator/discriminator updates (one source and one target batch each)
    iterations: Annotated[int, NON_NEGATIVE] = 20000
    # the reference uses 1 at 256 px; small digit images train well with 16-64
    batch_size: Annotated[int, Range(1)] = 32
    ngf: Annotated[int, WIDTH] = 64  # generator width (first conv)
    ndf: Annotated[int, WIDTH] = 64  # discriminator width (first conv)
    # residual blocks; None: 6 for images up to 128 px, else 9 (the reference)
    generator_blocks: Annotated[int, Range(0, 64)] | None = None
    # None: 1 for images up to 64 px, else 2 (the reference)
    generator_downsamplings: Annotated[int, Range(0, 8)] | None = None
    # PatchGAN stride-2 layers; None: 2 up to 64 px, else 3 (70×70 patches)
    discriminator_layers: Annotated[int, Range(1, 8)] | None = None
    norm: Literal["instance", "batch"] = "instance"
    gan_loss: Literal["lsgan", "vanilla"] = "lsgan"  # least squares, or the original log loss
    lambda_a: Annotated[float, NON_NEGATIVE] = 10.0  # cycle weight A -> B -> A
    lambda_b: Annotated[float, NON_NEGATIVE] = 10.0  # cycle weight B -> A -> B
    # identity weight, relative to lambda_a/b; 0 skips the identity passes
    lambda_identity: Annotated[float, NON_NEGATIVE] = 0.5
    semantic_weight: Annotated[float, NON_NEGATIVE] = 1.0  # CyCADA semantic-consistency weight; 0: plain CycleGAN
    semantic_targets: Literal["predicted", "labels"] = "predicted"  # G(a)'s target: f_S(a)'s class (CyCADA) or y_a
    # training of f_S on labeled source (stage pixel_classifier)
    semantic_classifier_iterations: Annotated[int, NON_NEGATIVE] = 2000
    label_filter: Literal["drop", "off"] = "drop"  # drop translated images whose f_S class disagrees with the label
    # warn when f_S agrees with fewer than this fraction of translated labels
    agreement_warning: Annotated[float, FRACTION] = 0.7
    feature_data: Literal["both", "translated", "source"] = "both"  # what the feature stage trains on
    # feature_data both: share of translated images in the mixed set
    translated_fraction: Annotated[float, FRACTION] = 0.5
    pool_size: Annotated[int, NON_NEGATIVE] = 50  # history of generated images per direction; 0 disables it
    lr: Annotated[float, OPEN_UNIT] = 2e-4
    beta1: Annotated[float, OPEN_UNIT] = 0.5
    lr_policy: Literal["linear", "step", "cosine"] = "linear"
    # linear: LR constant, then -> 0; step: x0.1 every decay_start·iterations; cosine: unused
    decay_start: Annotated[float, FRACTION] = 0.5
    # TensorBoard image grid of translations every N iterations; 0: never
    image_grid_every: Annotated[int, NON_NEGATIVE] = 1000
    translate_batch_size: Annotated[int, Range(1)] = 256  # batch size when translating the source set
    # the target-label oracle of the diagnostic (stage pixel_oracle); 0: off
    label_preservation_iterations: Annotated[int, NON_NEGATIVE] = 1000

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
