"""MCD: maximum classifier discrepancy (Saito et al., CVPR 2018).

The encoder G (the shared classifier's backbone and bottleneck) feeds two heads: the classifier's
own head F1 and a second head F2 of the same shape, a module of this adapter (checkpointed with the
stage, not part of the returned classifier). Each iteration, with d the `classifier_discrepancy` of
the heads' predictions on a target batch:

  A. G, F1 and F2 minimise CE(F1(G(x_s)), y_s) + CE(F2(G(x_s)), y_s) [+ CE of F1 on a labeled target batch];
  B. F1 and F2 minimise CE(F1(G(x_s)), y_s) + CE(F2(G(x_s)), y_s) − trade_off · d(F1(G(x_t)), F2(G(x_t)))
     with G fixed (its features computed without gradient, source and target as one batch):
     the heads disagree as much as they can on target while staying right on source;
  C. G minimises trade_off · d(F1(G(x_t)), F2(G(x_t))) num_k times with the heads fixed
     (requires_grad off): target features move where both heads agree.

One optimiser (the recipe's `train` settings) holds G, F1 and F2; a step updates only the
parameters its loss reached (the optimiser skips parameters without a gradient), and the LR
schedule advances once per iteration. The returned classifier predicts with F1 alone: the
shared classifier has one head, and after step C the two heads agree on target by construction.
The divergence guard watches the source CE of F1. One process only: steps B and C update parts
of the classifier separately, which the data-parallel wrapper of the whole classifier cannot
reduce.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.adversarial import DivergenceGuard, GuardOptions
from da_toolkit.adapters.base import FeatureAdapter, SupervisedTraining
from da_toolkit.errors import UserError
from da_toolkit.training.classifier_discrepancy import classifier_discrepancy
from da_toolkit.training.distributed import current
from da_toolkit.training.loop import train_loop


@dataclass
class MCDOptions(GuardOptions):
    """The recipe's `feature:` keys for `adapter: mcd`; defaults are the paper's digit setting."""

    trade_off: float = 1.0  # weight of the discrepancy in steps B and C
    num_k: int = 4  # step C's encoder updates per iteration (the paper's n = 4 for digits)

    def __post_init__(self):
        if self.trade_off <= 0:
            raise UserError(f"feature.trade_off: must be positive, got {self.trade_off}")
        if self.num_k < 1:
            raise UserError(f"feature.num_k: must be a positive number of encoder updates, got {self.num_k}")


@ADAPTERS.register("mcd")
class MCD(FeatureAdapter):
    """MCD: two heads maximise their disagreement on target, the encoder minimises it."""

    Options = MCDOptions

    def fit(self, classifier, source, target, ctx):
        if current().size > 1:
            raise UserError(f"{self.stage}.adapter: mcd trains in one process only (its steps update parts of the "
                            f"classifier separately); run it without torchrun")
        o = self.options
        second_head = nn.Linear(classifier.feature_dim, classifier.num_classes).to(ctx.device)
        training = SupervisedTraining(classifier, source, target, self.train, ctx, extra_modules=(second_head,))
        heads = nn.ModuleList([classifier.head, second_head])
        iterations = self.train.iterations
        guard = DivergenceGuard(self.stage, iterations, classifier.num_classes, o, {})

        def step(iteration: int) -> dict:
            source_images, source_labels = next(training.source)
            target_images, _ = next(training.target)
            # A: encoder and both heads on labeled data
            with ctx.autocast():
                features, logits = classifier(source_images, with_features=True)
                loss, scalars = training.classification_loss(logits, source_labels)
                second_ce = F.cross_entropy(second_head(features), source_labels)
                loss = loss + second_ce
            ctx.backward_step(loss, training.optimizer)
            scalars = {"loss/total": loss.detach(), **scalars, "loss/second_head_ce": second_ce.detach()}
            # B: the heads, on fixed features, stay right on source and disagree on target
            with ctx.autocast():
                with torch.no_grad():
                    features = classifier.features(torch.cat([source_images, target_images]))
                source_features, target_features = features.split([len(source_images), len(target_images)])
                heads_ce = sum(F.cross_entropy(head(source_features), source_labels) for head in heads)
                discrepancy = classifier_discrepancy(classifier.head(target_features), second_head(target_features))
                heads_loss = heads_ce - o.trade_off * discrepancy
            ctx.backward_step(heads_loss, training.optimizer)
            scalars["loss/heads_discrepancy"] = discrepancy.detach()
            # C: the encoder makes the fixed heads agree on target
            heads.requires_grad_(False)
            for _ in range(o.num_k):
                with ctx.autocast():
                    target_features = classifier.features(target_images)
                    discrepancy = classifier_discrepancy(classifier.head(target_features), second_head(target_features))
                ctx.backward_step(o.trade_off * discrepancy, training.optimizer)
            heads.requires_grad_(True)
            training.scheduler.step()
            scalars["loss/encoder_discrepancy"] = discrepancy.detach()
            scalars["lr"] = training.scheduler.get_last_lr()[0]
            guard.check(iteration + 1, scalars, ctx)
            return scalars

        classifier.train()
        second_head.train()
        state = {**training.state(), "second_head": second_head, "guard": guard}
        train_loop(ctx, self.stage, iterations, step, state, candidate=classifier)
        return classifier
