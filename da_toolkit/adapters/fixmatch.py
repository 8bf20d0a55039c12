"""FixMatch (Sohn et al., NeurIPS 2020) for domain adaptation, as Transfer-Learning-Library's example.

Each step (`adapters/self_training.py`) sees a labeled source batch and a target batch twice: a
weak view (translation) whose confident predictions become pseudo-labels, and a strong view (the
weak one further changed by RandAugment and Cutout, `data.augment.strong_transform`) trained to
predict them:

    L = CE(z_s, y_s) + trade_off · (1/B) Σ_i [max p_w,i ≥ τ] · CE(z_strong,i, argmax p_w,i)

(`training.self_training.confident_pseudo_label_loss`). The three batches go through the
classifier one at a time, as in Transfer-Learning-Library's example (and our mean teacher): in
training, batch norm normalises each with its own statistics, so source and target features are
each centred and scaled on their own. Sent through as one batch (FixMatch's interleaving, made for
labeled and unlabeled images of one distribution), the two domains shared one set of statistics and
the pseudo-labels drifted: MNIST→USPS, LeNet, batch 128, 1,000 iterations, seeds 0–2: 64.87 / 40.61
/ 41.11% where the separate passes reach the peer's 85% (benchmarks/results/peer-lenet). The weak
view takes no gradient (its pseudo-labels never do). Logged:
``self_training/mask_rate``, the share of target images above τ; the pseudo-labels' accuracy is not
computable without target labels, and is not logged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.self_training import SelfTraining, SelfTrainingOptions
from da_toolkit.data.augment import augment_images, strong_transform
from da_toolkit.errors import UserError
from da_toolkit.training.self_training import confident_pseudo_label_loss


@dataclass
class FixMatchOptions(SelfTrainingOptions):
    """The recipe keys of `adapter: fixmatch`."""

    threshold: float = 0.95  # τ of the paper (TLlib's example: 0.9, 0.8 on VisDA)
    trade_off: float = 1.0  # λ_u, the weight of the pseudo-label loss (the paper's)
    strong_operations: int = 2  # RandAugment: operations per image (the paper's N = 2)
    strong_magnitude: int = 10  # RandAugment: magnitude of each, of 31 bins (10: rotation 10°, shear 0.1)
    cutout: float = 0.25  # Cutout: largest area share of the erased rectangle (a half-side square: 0.25); 0: off

    def __post_init__(self):
        super().__post_init__()
        if self.strong_operations < 0:
            raise UserError(f"feature.strong_operations: must be zero or more, got {self.strong_operations}")
        if not 0 <= self.strong_magnitude <= 30:
            raise UserError(f"feature.strong_magnitude: must lie in [0, 30] (of 31 bins), got {self.strong_magnitude}")
        if not 0 <= self.cutout < 1:
            raise UserError(f"feature.cutout: must lie in [0, 1) (0: off), got {self.cutout}")


@ADAPTERS.register("fixmatch")
class FixMatch(SelfTraining):
    """FixMatch: confident pseudo-labels of weakly augmented target images taught on strongly augmented ones."""

    Options = FixMatchOptions

    def __init__(self, options, setup, stage: str = "feature"):
        super().__init__(options, setup, stage)
        self.strong_transform = strong_transform(options.strong_operations, options.strong_magnitude, options.cutout)

    def target_loss(self, training, source_images, source_labels, target_images):
        o = self.options
        weak = self.weak(target_images)
        strong = augment_images(weak, self.strong_transform)
        with torch.no_grad():  # one pass per batch: batch norm normalises each domain and view on its own
            weak_logits = training.parallel_classifier(weak)
        source_logits = training.parallel_classifier(source_images)
        strong_logits = training.parallel_classifier(strong)
        loss, scalars = training.classification_loss(source_logits, source_labels)
        pseudo_label_loss, mask_rate = confident_pseudo_label_loss(strong_logits, weak_logits, o.threshold)
        scalars.update({"loss/pseudo_label": pseudo_label_loss.detach(), "self_training/mask_rate": mask_rate})
        return loss + o.trade_off * pseudo_label_loss, scalars
