"""DANN: domain-adversarial training of the shared classifier (Ganin & Lempitsky 2015; Ganin et al. 2016).

One SGD step minimises, over the classifier and the domain discriminator D together,

    L = CE(head(f_s), y_s) [+ CE on a labeled target batch] + trade_off · L_d(R_λ(f_s), R_λ(f_t))

with f = classifier.features(x) the bottleneck features, L_d the discriminator's cross-entropy
(source = 1, target = 0; see `DomainAdversarialLoss`) and R_λ the gradient reversal layer, so
D descends L_d while the features ascend it. λ follows λ_p = c · (2 / (1 + exp(−γ p)) − 1) over
training progress p ∈ [0, 1] (γ = 10, c = `grl_coefficient`), or stays at c with `grl: fixed`.
The learning rate follows the recipe's `train` section; its default is the paper's
lr_p = lr₀ / (1 + 10 p)^0.75 with SGD and momentum 0.9.

Source and target batches go through the classifier as one concatenated batch, so the batch-norm
layers normalise with statistics of both domains, as in the reference Caffe implementation and
Transfer-Learning-Library (the discriminator's batch norm likewise sees both domains at once).
Discriminator accuracy is logged as ``domain/accuracy``: it drifts towards 0.5 as the domains align.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import torch

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.base import FeatureAdapter, SupervisedTraining
from da_toolkit.errors import UserError
from da_toolkit.models import DomainDiscriminator
from da_toolkit.training.domain_losses import DomainAdversarialLoss, GradientReversal
from da_toolkit.training.loop import train_loop
from da_toolkit.training.schedules import grl_coefficient


class RecentMean:
    """Mean of the last `window` values of a scalar; checkpointed with a stage, so a resumed run
    reports what an uninterrupted one would."""

    def __init__(self, window: int = 100):
        self.values: deque = deque(maxlen=window)

    def add(self, value: torch.Tensor) -> None:
        self.values.append(value.detach())

    def mean(self) -> float | None:
        return round(float(torch.stack(list(self.values)).float().mean()), 4) if self.values else None

    def state_dict(self) -> dict:
        return {"values": [float(v) for v in self.values]}

    def load_state_dict(self, state: dict) -> None:
        self.values.clear()
        self.values.extend(torch.tensor(v) for v in state["values"])


def report_domain_accuracy(ctx, accuracy: RecentMean) -> None:
    """metrics.json: stages.feature.domain_accuracy, the discriminator's accuracy at the end of training."""
    ctx.metrics.setdefault("feature", {}).update(
        domain_accuracy=accuracy.mean(),
        domain_accuracy_note=f"mean over the last {accuracy.values.maxlen} iterations; 0.5 = domains aligned")


def check_discriminator(hidden: list[int], dropout: float, prefix: str = "feature.") -> None:
    if any(width < 1 for width in hidden):
        raise UserError(f"{prefix}discriminator_hidden: layer widths must be positive, got {hidden}")
    if not 0 <= dropout < 1:
        raise UserError(f"{prefix}discriminator_dropout: must lie in [0, 1), got {dropout}")


@dataclass
class DANNOptions:
    """The recipe's `feature:` keys for `adapter: dann`."""

    trade_off: float = 1.0  # weight of the domain loss L_d
    grl: Literal["schedule", "fixed"] = "schedule"  # schedule: λ_p = c (2/(1+exp(-γp)) - 1); fixed: λ = c
    grl_coefficient: float = 1.0  # c: the fixed λ, or the schedule's final value
    grl_gamma: float = 10.0  # γ of the schedule
    discriminator_hidden: list[int] = field(default_factory=lambda: [1024, 1024])
    discriminator_batch_norm: bool = True
    discriminator_dropout: float = 0.5

    def __post_init__(self):
        for key in ("trade_off", "grl_coefficient", "grl_gamma"):
            if getattr(self, key) < 0:
                raise UserError(f"feature.{key}: must be zero or more, got {getattr(self, key)}")
        check_discriminator(self.discriminator_hidden, self.discriminator_dropout)

    def reversal_coefficient(self, progress: float) -> float:
        """λ at training progress p ∈ [0, 1]."""
        if self.grl == "fixed":
            return self.grl_coefficient
        return self.grl_coefficient * grl_coefficient(progress, self.grl_gamma)


@ADAPTERS.register("dann")
class DANN(FeatureAdapter):
    """DANN: gradient reversal against a domain discriminator on the classifier's features."""

    Options = DANNOptions

    def fit(self, classifier, source, target, ctx):
        o = self.options
        discriminator = DomainDiscriminator(classifier.feature_dim, o.discriminator_hidden,
                                            o.discriminator_batch_norm, o.discriminator_dropout).to(ctx.device)
        domain_loss = DomainAdversarialLoss(discriminator, GradientReversal())
        training = SupervisedTraining(classifier, source, target, self.train, ctx, extra_modules=(discriminator,))
        iterations = self.train.iterations
        domain_accuracy = RecentMean()

        def step(iteration: int) -> dict:
            domain_loss.grl.coefficient = o.reversal_coefficient(iteration / max(iterations, 1))
            source_images, source_labels = next(training.source)
            target_images, _ = next(training.target)
            with ctx.autocast():
                features = classifier.features(torch.cat([source_images, target_images]))
                source_features, target_features = features.split([len(source_images), len(target_images)])
                loss, scalars = training.classification_loss(classifier.head(source_features), source_labels)
                transfer_loss, accuracy = domain_loss(source_features, target_features)
                loss = loss + o.trade_off * transfer_loss
            training.update(loss)
            domain_accuracy.add(accuracy)
            return {"loss/total": loss.detach(), **scalars, "loss/domain": transfer_loss.detach(),
                    "domain/accuracy": accuracy, "domain/grl_coefficient": domain_loss.grl.coefficient,
                    "lr": training.scheduler.get_last_lr()[0]}

        classifier.train()
        discriminator.train()
        state = {**training.state(), "discriminator": discriminator, "domain_accuracy": domain_accuracy}
        train_loop(ctx, "feature", iterations, step, state)
        report_domain_accuracy(ctx, domain_accuracy)
        return classifier
