"""The self-training family: the classifier learns from its own confident predictions of target images.

One SGD step of every method here (FixMatch, mean teacher) minimises

    L = CE(head(f_s), y_s) [+ CE on a labeled target batch] + the method's target terms

on a source batch and views of a target batch: a *weak* view (the target batch as `train.augment`
makes it, translated by up to `weak_translate` of the image side, never flipped) and, per method,
a strong one or a second weak one (data/augment.py). These methods are usually run as a
refinement stage (`refine:`) after a feature stage that aligned the domains, since their
pseudo-labels and teachers are only as good as the starting classifier's confident predictions;
as a feature stage they start from scratch and teach themselves from the source alone.

A stage runs `iterations` steps (null: train.iterations) with the recipe's optimiser (fresh
moments) and lr schedule over those iterations, starting from `lr` (null: train.lr): a refinement
stage may start lower, to fine-tune what the feature stage aligned rather than retrain it. A
`DivergenceGuard` watches every run.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from da_toolkit.adapters.adversarial import DivergenceGuard, GuardOptions, RecentMean
from da_toolkit.adapters.base import FeatureAdapter, SupervisedTraining
from da_toolkit.data.augment import augment_images, weak_transform
from da_toolkit.errors import UserError
from da_toolkit.training.loop import train_loop


@dataclass
class SelfTrainingOptions(GuardOptions):
    """The recipe keys the self-training methods share."""

    iterations: int | None = None  # this stage's iterations (its lr schedule spans them); null: train.iterations
    lr: float | None = None  # this stage's initial learning rate (train.lr_schedule from it); null: train.lr
    weak_translate: float = 0.125  # weak view: a translation of up to this share of the image side; 0: none
    threshold: float = 0.95  # τ: a target prediction counts when its largest class probability is at least τ
    trade_off: float = 1.0  # weight of the method's target loss

    def __post_init__(self):
        if self.iterations is not None and self.iterations < 0:
            raise UserError(f"feature.iterations: must be zero or more, or null (train.iterations), got "
                            f"{self.iterations}")
        if self.lr is not None and self.lr <= 0:
            raise UserError(f"feature.lr: must be positive, or null (train.lr), got {self.lr}")
        if not 0 <= self.weak_translate <= 0.5:
            raise UserError(f"feature.weak_translate: must lie in [0, 0.5] (share of the image side), got "
                            f"{self.weak_translate}")
        if not 0 <= self.threshold <= 1:
            raise UserError(f"feature.threshold: must lie in [0, 1], got {self.threshold}")
        if self.trade_off < 0:
            raise UserError(f"feature.trade_off: must be zero or more, got {self.trade_off}")


class SelfTraining(FeatureAdapter):
    """A self-training method: `target_loss` of a step's batches, and optionally a `start` hook (extra
    state of the stage), an `after_update` hook and another `returned` model (e.g. a teacher)."""

    Options = SelfTrainingOptions

    def __init__(self, options, setup, stage: str = "feature"):
        super().__init__(options, setup, stage)
        self.weak_transform = weak_transform(options.weak_translate) if options.weak_translate > 0 else None

    def start(self, classifier: nn.Module, ctx) -> dict:
        """Build what the method keeps besides the classifier; the objects to checkpoint with the stage."""
        return {}

    def target_loss(self, training: SupervisedTraining, source_images: torch.Tensor, source_labels: torch.Tensor,
                    target_images: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The step's loss (source CE included) and its scalars, among them ``self_training/mask_rate``
        (the share of target images above τ; metrics.json: stages.<stage>.mask_rate)."""
        raise NotImplementedError

    def after_update(self, classifier: nn.Module) -> None:
        """Called after each optimiser step."""

    def returned(self, classifier: nn.Module) -> nn.Module:
        """The model the stage scores as its candidate and returns (its weights copied into the classifier)."""
        return classifier

    def weak(self, images: torch.Tensor) -> torch.Tensor:
        """The weak view of a target batch."""
        return augment_images(images, self.weak_transform) if self.weak_transform is not None else images

    def fit(self, classifier, source, target, ctx):
        o = self.options
        iterations = self.train.iterations if o.iterations is None else o.iterations
        training = SupervisedTraining(classifier, source, target, self.train, ctx, iterations=iterations, lr=o.lr)
        guard = DivergenceGuard(self.stage, iterations, classifier.num_classes, o, {})
        mask_rate = RecentMean()

        def step(iteration: int) -> dict:
            source_images, source_labels = next(training.source)
            target_images, _ = next(training.target)
            with ctx.autocast():
                loss, scalars = self.target_loss(training, source_images, source_labels, target_images)
            training.update(loss)
            self.after_update(classifier)
            mask_rate.add(scalars["self_training/mask_rate"])
            scalars = {"loss/total": loss.detach(), **scalars, "lr": training.scheduler.get_last_lr()[0]}
            guard.check(iteration + 1, scalars, ctx)
            return scalars

        classifier.train()
        state = {**training.state(), **self.start(classifier, ctx), "guard": guard, "mask_rate": mask_rate}
        returned = self.returned(classifier)
        train_loop(ctx, self.stage, iterations, step, state, candidate=returned)
        if mask_rate.values:
            note = (f"share of target images predicted with confidence ≥ {o.threshold}, mean over the last "
                    f"{mask_rate.values.maxlen} iterations")
            ctx.metrics.setdefault(self.stage, {}).update(mask_rate=mask_rate.mean(), mask_rate_note=note)
        if returned is not classifier:
            classifier.load_state_dict(returned.state_dict())
        return classifier
