"""VADA then DIRT-T (Shu, Bui, Narui & Ermon, "A DIRT-T Approach to Unsupervised Domain Adaptation",
ICLR 2018), two stages of the shared classifier h = head ∘ features; the losses are in
training/virtual_adversarial.py.

1. stage ``<stage>_vada`` (`vada_iterations`, the recipe's `train` optimiser and schedule): VADA,

       L = CE(h(x_s), y_s) + L_d(R_λd(f_s), R_λd(f_t)) + λ_s L_v(x_s) + λ_t (L_c(x_t) + L_v(x_t))
           [+ CE on labeled target]

   L_d: DANN's domain loss on the features f through the gradient reversal layer R_λd
   (`DomainAdversarialLoss`); L_c: the conditional entropy of the target predictions; L_v: virtual
   adversarial training (KL between the predictions on an image and on the image moved by ε along
   its adversarial direction). The paper's λ_d is the reversal coefficient, not a weight on L_d:
   the discriminator learns from the whole L_d, the features from −λ_d ∂L_d/∂f, as in the
   authors' code, where the discriminator has its own optimiser and the classifier minimises
   λ_d times the domain-confusion loss. Source and target batches go through the classifier
   separately (batch norm on each domain's statistics, as in the authors' code), so that each
   VAT's clean and perturbed predictions come from the same batch statistics.
2. stage ``<stage>_dirt`` (`dirt_iterations`, Adam as in the authors' code): DIRT-T, on the target
   alone (no source batch is ever read),

       L = λ_t (L_c(x_t) + L_v(x_t)) + β KL(h_teacher(x_t) || h(x_t))   [+ CE on labeled target]

   the teacher (in eval mode, no gradient) starts as the classifier at the start of the stage and
   is replaced by the classifier every `teacher_every` iterations: each round of `teacher_every`
   iterations approximately solves the paper's eq. 8, a natural-gradient step that keeps the
   refined classifier close to the last one in prediction space. The authors' teacher is the
   Polyak average (EMA 0.998) of the weights; here it is the weights themselves.

`vada_iterations: 0` skips VADA: DIRT-T then refines whatever classifier it is handed (e.g. after
DANN, `recipes/_base/methods/dann_dirt_t.yaml`). The divergence guard watches VADA as it does the
adversarial family; DIRT-T, without a source loss to judge, stops at a non-finite loss.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Annotated, ClassVar

import torch

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.adversarial import (DROPOUT, DivergenceGuard, GuardOptions, RecentMean,
                                             report_domain_accuracy)
from da_toolkit.adapters.base import FeatureAdapter, SupervisedTraining
from da_toolkit.errors import UserError
from da_toolkit.models import DomainDiscriminator
from da_toolkit.bounds import WIDTH
from da_toolkit.training.domain_losses import DomainAdversarialLoss, GradientReversal
from da_toolkit.training.loop import TrainingDiverged, train_loop
from da_toolkit.training.virtual_adversarial import conditional_entropy, softmax_kl, virtual_adversarial_loss


@dataclass
class DirtTOptions(GuardOptions):
    """The recipe's `feature:` keys for `adapter: dirt_t`; defaults are the paper's digit settings and
    the authors' code (RuiShu/dirt-t, run_dirtt.py), see recipes/_base/methods/dirt_t.yaml."""

    transfer_weights: ClassVar[tuple[str, ...]] = ("domain_weight", "target_weight")  # named by the guard's message
    vada_iterations: int | None = None  # VADA stage; None: train.iterations; 0: DIRT-T only (a refinement)
    dirt_iterations: int | None = None  # DIRT-T stage; None: train.iterations; 0: VADA only
    domain_weight: float = 1e-2  # λ_d, the gradient reversal coefficient of the domain loss
    source_weight: float = 1.0  # λ_s, weight of VAT on source
    target_weight: float = 1e-2  # λ_t, weight of conditional entropy + VAT on target
    teacher_weight: float = 1e-2  # β, weight of KL(teacher || classifier) in DIRT-T
    teacher_every: int = 5000  # DIRT-T iterations between two replacements of the teacher
    vat_radius: float = 3.5  # ε, L2 norm of the virtual adversarial perturbation of an image
    vat_xi: float = 1e-6  # ξ, size of the finite difference of VAT's power iteration
    dirt_lr: float = 1e-3  # DIRT-T's Adam learning rate
    dirt_beta1: float = 0.5  # DIRT-T's Adam β₁
    discriminator_hidden: list[Annotated[int, WIDTH]] = field(default_factory=lambda: [100])
    discriminator_batch_norm: bool = False
    discriminator_dropout: Annotated[float, DROPOUT] = 0.0

    def __post_init__(self):
        for key in ("vada_iterations", "dirt_iterations"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise UserError(f"feature.{key}: must be zero or more, or null, got {value}")
        for key in ("domain_weight", "source_weight", "target_weight", "teacher_weight"):
            if getattr(self, key) < 0:
                raise UserError(f"feature.{key}: must be zero or more, got {getattr(self, key)}")
        for key in ("teacher_every", "vat_radius", "vat_xi", "dirt_lr"):
            if getattr(self, key) <= 0:
                raise UserError(f"feature.{key}: must be positive, got {getattr(self, key)}")
        if not 0 <= self.dirt_beta1 < 1:
            raise UserError(f"feature.dirt_beta1: must lie in [0, 1), got {self.dirt_beta1}")


@ADAPTERS.register("dirt_t")
class DirtT(FeatureAdapter):
    """VADA (source CE, domain adversarial, conditional entropy, VAT), then DIRT-T's teacher-guided
    refinement on the target alone."""

    Options = DirtTOptions

    def fit(self, classifier, source, target, ctx):
        o = self.options
        vada_iterations = self.train.iterations if o.vada_iterations is None else o.vada_iterations
        dirt_iterations = self.train.iterations if o.dirt_iterations is None else o.dirt_iterations
        domain = DomainAdversarialLoss(
            DomainDiscriminator(classifier.feature_dim, o.discriminator_hidden, o.discriminator_batch_norm,
                                o.discriminator_dropout), GradientReversal(o.domain_weight)).to(ctx.device)
        training = SupervisedTraining(classifier, source, target, self.train, ctx, extra_modules=(domain,),
                                      iterations=vada_iterations)
        classifier.train()
        if vada_iterations:
            self.vada(classifier, domain, training, vada_iterations, ctx)
        if dirt_iterations:
            self.dirt(classifier, training, dirt_iterations, ctx, score_start=not vada_iterations)
        return classifier

    def vat(self, classifier, training: SupervisedTraining):
        """(images, their logits) -> L_v: the perturbed images go through the classifier as the steps call it
        (its data-parallel wrapper), the power iteration through the classifier itself."""
        o = self.options
        return lambda images, logits: virtual_adversarial_loss(training.parallel_classifier, images, logits,
                                                               o.vat_radius, o.vat_xi, direction_model=classifier)

    def vada(self, classifier, domain: DomainAdversarialLoss, training: SupervisedTraining, iterations: int,
             ctx) -> None:
        """VADA, stage `<stage>_vada`: the recipe's optimiser over the classifier and the discriminator."""
        o = self.options
        parallel_domain, = training.parallel_modules
        guard = DivergenceGuard(self.stage, iterations, classifier.num_classes, o,
                                {"loss/domain": DomainAdversarialLoss.chance})
        domain_accuracy = RecentMean()
        vat_loss = self.vat(classifier, training)

        def step(iteration: int) -> dict:
            source_images, source_labels = next(training.source)
            target_images, _ = next(training.target)
            with ctx.autocast():
                source_features, source_logits = training.parallel_classifier(source_images, with_features=True)
                target_features, target_logits = training.parallel_classifier(target_images, with_features=True)
                loss, scalars = training.classification_loss(source_logits, source_labels)
                domain_loss, domain_scalars = parallel_domain(source_features, target_features)
                entropy = conditional_entropy(target_logits)
                source_vat = vat_loss(source_images, source_logits)
                target_vat = vat_loss(target_images, target_logits)
                loss = loss + domain_loss + o.source_weight * source_vat + o.target_weight * (entropy + target_vat)
            training.update(loss)
            scalars = {"loss/total": loss.detach(), **scalars, "loss/domain": domain_loss.detach(), **domain_scalars,
                       "loss/target_entropy": entropy.detach(), "loss/source_vat": source_vat.detach(),
                       "loss/target_vat": target_vat.detach(), "lr": training.scheduler.get_last_lr()[0]}
            domain_accuracy.add(scalars["domain/accuracy"])
            guard.check(iteration + 1, scalars, ctx)
            return scalars

        state = {**training.state(), "domain_loss": domain, "domain_accuracy": domain_accuracy, "guard": guard}
        train_loop(ctx, f"{self.stage}_vada", iterations, step, state, candidate=classifier)
        report_domain_accuracy(ctx, self.stage, domain_accuracy)

    def dirt(self, classifier, training: SupervisedTraining, iterations: int, ctx, score_start: bool) -> None:
        """DIRT-T, stage `<stage>_dirt`: Adam over the classifier, target batches only."""
        o = self.options
        teacher = copy.deepcopy(classifier).eval().requires_grad_(False)
        optimizer = torch.optim.Adam(classifier.parameters(), o.dirt_lr, betas=(o.dirt_beta1, 0.999))
        vat_loss = self.vat(classifier, training)

        def step(iteration: int) -> dict:
            images, _ = next(training.target)
            with ctx.autocast():
                logits = training.parallel_classifier(images)
                with torch.no_grad():
                    teacher_logits = teacher(images)
                entropy = conditional_entropy(logits)
                vat = vat_loss(images, logits)
                divergence = softmax_kl(teacher_logits, logits)
                loss = o.target_weight * (entropy + vat) + o.teacher_weight * divergence
                scalars = {"loss/target_entropy": entropy.detach(), "loss/target_vat": vat.detach(),
                           "loss/teacher_kl": divergence.detach()}
                labeled_loss = training.labeled_target_loss()
                if labeled_loss is not None:
                    scalars["loss/labeled_target_ce"] = labeled_loss.detach()
                    loss = loss + labeled_loss
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDiverged(f"{self.stage}_dirt: the loss is {value} at iteration {iteration + 1}; likely "
                                       f"cause: {self.stage}.dirt_lr or a loss weight too large")
            ctx.backward_step(loss, optimizer)
            if (iteration + 1) % o.teacher_every == 0:
                teacher.load_state_dict(classifier.state_dict())
            return {"loss/total": loss.detach(), **scalars}

        state = {"classifier": classifier, "teacher": teacher, "optimizer": optimizer,
                 **{key: value for key, value in training.state().items() if key.endswith("target_stream")}}
        train_loop(ctx, f"{self.stage}_dirt", iterations, step, state, candidate=classifier, score_start=score_start)
