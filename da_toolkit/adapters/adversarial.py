"""The adversarial family: joint training of the shared classifier with pluggable transfer losses.

One SGD step of every method here (DANN, CDAN, MCC, DAN, JAN, CORAL, BNM, AFN, and DANN or CDAN
plus MCC and/or BSP) minimises, over the classifier and the transfer losses' own modules (e.g. a
domain discriminator) together,

    L = CE(head(f_s), y_s) [+ CE on a labeled target batch] + Σ_k w_k · L_k(f_s, f_t, z_s, z_t)

with f = classifier.features(x) the bottleneck features and z = head(f) the class logits of a
source and a target batch. Source and target go through the classifier as one concatenated
batch, so its batch norm normalises with statistics of both domains (as in the reference
implementations). A transfer loss is an `nn.Module` with ``forward(f_s, f_t, z_s, z_t) -> (loss,
{scalar name: value})`` and an attribute ``chance`` (its value when the domains cannot be told
apart, or None). A method is its Options dataclass plus `transfer_losses`, which builds the terms.

Adversarial terms reverse their gradient into the features with R_λ; λ warms up over
iterations (see `AdversarialOptions.reversal_coefficient`). A `DivergenceGuard` watches every run.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal

import torch
from torch import nn

from da_toolkit.adapters.base import FeatureAdapter, SupervisedTraining
from da_toolkit.models import DomainDiscriminator
from da_toolkit.bounds import FRACTION, NON_NEGATIVE, POSITIVE, WIDTH, Range
from da_toolkit.training.class_confusion import MinimumClassConfusionLoss
from da_toolkit.training.domain_losses import GradientReversal
from da_toolkit.training.loop import TrainingDiverged, train_loop
from da_toolkit.training.schedules import grl_coefficient
from da_toolkit.training.spectral import BatchSpectralPenaltyLoss
from da_toolkit.training.target_entropy import TargetEntropyLoss


class RecentMean:
    """Mean of the last `window` values of a scalar; checkpointed with a stage (as plain numbers), so a
    resumed run reports what an uninterrupted one would. Values stay where the step made them (no
    per-step copy from a GPU); the restored ones are CPU tensors until they leave the window."""

    def __init__(self, window: int = 100):
        self.values: deque = deque(maxlen=window)

    def add(self, value: torch.Tensor | float) -> None:
        self.values.append(value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value)))

    def mean(self) -> float | None:
        if not self.values:
            return None
        device = self.values[-1].device
        return round(float(torch.stack([value.to(device, torch.float32) for value in self.values]).mean()), 4)

    def full(self) -> bool:
        return len(self.values) == self.values.maxlen

    def state_dict(self) -> dict:
        return {"values": [float(v) for v in self.values]}

    def load_state_dict(self, state: dict) -> None:
        self.values.clear()
        self.values.extend(torch.tensor(v) for v in state["values"])


def report_domain_accuracy(ctx, stage: str, accuracy: RecentMean) -> None:
    """metrics.json: stages.<stage>.domain_accuracy, the discriminator's accuracy at the end of training."""
    ctx.metrics.setdefault(stage, {}).update(
        domain_accuracy=accuracy.mean(),
        domain_accuracy_note=f"mean over the last {accuracy.values.maxlen} iterations; 0.5 = domains aligned")


DROPOUT = Range(0, 1, high_open=True)  # the share of a layer's units dropped
WARMUP = Range(1, why="iterations; null: the run's")  # the reversal coefficient's warm-up


# ------------------------------------------------------------------------------ divergence guard


CHANCE_SHARE = 0.9  # the source CE counts as "at chance" above 0.9 · ln(C)
MIN_JUDGED_ITERATION = 200  # no run is judged "at chance" before this iteration (or its last, if shorter)
DOMAIN_LOSS_LIMIT = 10.0  # the domain loss counts as diverged above 10 × its chance value (healthy runs: ≤ 4.1 ×)


class DivergenceGuard:
    """Stops (or warns about) a run of the adversarial family that learns nothing.

    From iteration max(⌈after · iterations⌉, window) on, over the last `window` iterations (the
    first check from iteration 200 on, or the run's last if it is shorter: even without a transfer
    loss the DTN needs 100–150 iterations to leave chance on the syndigits tasks, so a short run is
    judged on its last iterations, not on its first fifth):
    * the mean source cross-entropy ≥ 0.9 · ln C (chance: ln C for C classes): the classifier
      has not learned the labeled source, the transfer loss overpowers it;
    * the mean of a transfer loss with a chance value (the domain losses: ln 2) > 10 × chance:
      the discriminator is confidently wrong for a sustained period, an oscillating minimax;
    and at any iteration a non-finite loss. `mode`: stop (raise `TrainingDiverged`), warn (print
    the line once and record it in metrics.json under feature.guard), ignore (YAML reads a bare `off` as false).
    """

    watched = ("loss/source_ce",)  # the scalars whose recent means `stalled` judges

    def __init__(self, stage: str, iterations: int, num_classes: int, options: GuardOptions,
                 chances: dict[str, float], window: int = 50):
        self.stage, self.iterations, self.mode = stage, iterations, options.guard
        self.start = max(math.ceil(options.guard_after * iterations), window)
        # the recipe keys a message suggests, those of the method's options: its transfer-loss weights, and the
        # reversal warm-up where the method has one
        self.weights = " or ".join(f"{stage}.{key}" for key in options.transfer_weights)
        reversal = isinstance(options, ReversalOptions)
        self.warmup = f" or lengthen the reversal warm-up {stage}.grl_warmup" if reversal else ""
        self.chance_start = min(iterations, max(self.start, MIN_JUDGED_ITERATION))
        self.num_classes = num_classes
        self.chance_ce = math.log(num_classes)
        self.chances = chances
        self.means = {name: RecentMean(window) for name in (*self.watched, *chances)}
        self.warned = False

    def check(self, iteration: int, scalars: dict, ctx) -> None:
        """`scalars` of the step that finished iteration `iteration` (1-based count of steps done)."""
        if self.mode == "ignore":
            return
        for name, mean in self.means.items():
            mean.add(scalars[name])
        problem = self.problem(iteration, scalars)
        if problem is None:
            return
        line = (f"{self.stage}: training diverged at iteration {iteration} of {self.iterations}: {problem} "
                f"(guard: {self.stage}.guard=warn to go on, ignore to disable)")
        if self.mode == "stop":
            raise TrainingDiverged(line)
        if not self.warned:
            self.warned = True
            ctx.info(f"warning: {line}")
            ctx.metrics.setdefault(self.stage, {})["guard"] = line

    def problem(self, iteration: int, scalars: dict) -> str | None:
        total = float(scalars["loss/total"])
        if not math.isfinite(total):
            return (f"the loss is {total}; likely cause: a learning rate or transfer-loss weight too large "
                    f"(train.lr, {self.weights})")
        if iteration < self.start:
            return None
        stalled = self.stalled() if iteration >= self.chance_start else None
        if stalled is not None:
            return stalled
        for name, chance in self.chances.items():
            value = self.means[name].mean()
            if value > DOMAIN_LOSS_LIMIT * chance:
                return (f"{name} = {value:.3f} is far above its chance value {chance:.3f} (mean of the last "
                        f"{self.means[name].values.maxlen} iterations): the discriminator is confidently wrong, "
                        f"the minimax oscillates; likely cause: {self.weights} too large")
        return None

    def stalled(self) -> str | None:
        """Why the run learns nothing, judged on the recent means of `watched`, or None."""
        source_ce = self.means["loss/source_ce"].mean()
        if source_ce >= CHANCE_SHARE * self.chance_ce:
            return (f"the source classification loss is still at chance ({source_ce:.3f}, chance ln {self.num_classes} "
                    f"= {self.chance_ce:.3f}, mean of the last {self.means['loss/source_ce'].values.maxlen} "
                    f"iterations); likely cause: the transfer loss overpowers classification (lower "
                    f"{self.weights}{self.warmup})")
        return None

    def state_dict(self) -> dict:
        return {"warned": self.warned, **{name: mean.state_dict() for name, mean in self.means.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.warned = state["warned"]
        for name, mean in self.means.items():
            mean.load_state_dict(state[name])


# ------------------------------------------------------------------------------------- options


@dataclass
class GuardOptions:
    """The divergence guard's recipe keys, shared by the whole family."""

    guard: Literal["stop", "warn", "ignore"] = "stop"  # what a diverged run does (see DivergenceGuard)
    guard_after: Annotated[float, FRACTION] = 0.2  # share of the budget after which the source CE must be below chance
    transfer_weights: ClassVar[tuple[str, ...]] = ("trade_off",)  # the keys weighting the method's transfer loss


@dataclass
class JointOptions(GuardOptions):
    """The keys of every joint-training method (`JointAdaptation`): how its batches meet the classifier,
    and the guard's.

    ``domain_batches: separate`` (the default) sends each batch through the classifier on its own, so in
    training batch norm normalises each domain with its own statistics (as TLlib's DAN and AFN; a
    domain-specific normalisation that aligns the features' first two moments by itself); ``joint``
    sends the source and target batch as one batch, normalised with the statistics of the mix (as
    Transfer-Learning-Library's DANN, CDAN, MCC, JAN, BSP and MDD). The default since 2026-12-05
    (measured in benchmarks/results/joint-domain-batches/)."""

    domain_batches: Literal["joint", "separate"] = "separate"


@dataclass
class TransferLossOptions(JointOptions):
    """A method with one transfer loss of its own: its weight, and the family's keys."""

    trade_off: Annotated[float, NON_NEGATIVE] = 1.0  # weight of the transfer loss


@dataclass
class ClassConfusionOptions:
    """MCC added to another method: its weight (0: off) and temperature."""

    mcc_trade_off: Annotated[float, NON_NEGATIVE] = 0.0  # weight of the MCC loss on the target predictions; 0 = no MCC
    mcc_temperature: Annotated[float, POSITIVE] = 2.5  # T of softmax(z / T)

    def class_confusion_terms(self) -> list[tuple[str, float, nn.Module]]:
        if self.mcc_trade_off == 0:
            return []
        return [("loss/mcc", self.mcc_trade_off, MinimumClassConfusionLoss(self.mcc_temperature))]


@dataclass
class SpectralPenaltyOptions:
    """BSP added to an adversarial method: its weight (0: off)."""

    bsp_trade_off: Annotated[float, NON_NEGATIVE] = 0.0  # weight of the batch spectral penalty on the features; 0 = no BSP

    def spectral_penalty_terms(self) -> list[tuple[str, float, nn.Module]]:
        if self.bsp_trade_off == 0:
            return []
        return [("loss/bsp", self.bsp_trade_off, BatchSpectralPenaltyLoss())]


@dataclass
class TargetEntropyOptions:
    """Entropy minimisation of the target predictions added to a method: its weight (0: off)."""

    target_entropy_trade_off: Annotated[float, NON_NEGATIVE] = 0.0  # weight of the target prediction entropy; 0 = off

    def target_entropy_terms(self) -> list[tuple[str, float, nn.Module]]:
        if self.target_entropy_trade_off == 0:
            return []
        return [("loss/target_entropy", self.target_entropy_trade_off, TargetEntropyLoss())]


@dataclass
class ReversalOptions:
    """The gradient reversal layer's recipe keys: its coefficient λ and warm-up."""

    grl: Literal["schedule", "fixed"] = "schedule"  # schedule: warm-up λ_i (below); fixed: λ = c
    grl_coefficient: Annotated[float, NON_NEGATIVE] = 1.0  # c: the fixed λ, or the warm-up's final value
    grl_gamma: Annotated[float, NON_NEGATIVE] = 10.0  # γ of the warm-up
    # H: λ_i = c (2/(1+exp(-γ i/H)) - 1); null: H = the run's iterations
    grl_warmup: Annotated[int, WARMUP] | None = 10000

    def reversal_coefficient(self, iteration: int, iterations: int) -> float:
        """λ at `iteration` of `iterations`: c (2 / (1 + exp(−γ i / H)) − 1), H = grl_warmup (or the
        run's length when null, the paper's λ_p over progress p), or c with `grl: fixed`."""
        if self.grl == "fixed":
            return self.grl_coefficient
        horizon = self.grl_warmup if self.grl_warmup is not None else max(iterations, 1)
        return self.grl_coefficient * grl_coefficient(iteration / horizon, self.grl_gamma)


@dataclass
class AdversarialOptions(ReversalOptions, SpectralPenaltyOptions, ClassConfusionOptions, JointOptions):
    """The recipe's `feature:` keys of a domain-adversarial method (DANN, CDAN), optionally with MCC and BSP."""

    trade_off: Annotated[float, NON_NEGATIVE] = 1.0  # weight of the domain loss L_d (the mean BCE over both domains)
    discriminator_hidden: list[Annotated[int, WIDTH]] = field(default_factory=lambda: [1024, 1024])
    discriminator_batch_norm: bool = False  # batch norm rescales any domain gap to unit size: logits of 10-40
    discriminator_dropout: Annotated[float, DROPOUT] = 0.5

    def discriminator(self, in_features: int) -> DomainDiscriminator:
        return DomainDiscriminator(in_features, self.discriminator_hidden, self.discriminator_batch_norm,
                                   self.discriminator_dropout)


# --------------------------------------------------------------------------------- the training


class JointAdaptation(FeatureAdapter):
    """A feature adapter that trains the classifier jointly with the terms of `transfer_losses`."""

    def transfer_losses(self, classifier: nn.Module, num_classes: int) -> list[tuple[str, float, nn.Module]]:
        """(scalar name, weight, loss module) of each transfer term."""
        raise NotImplementedError

    def forward_domains(self, classifier, source_images, target_images):
        """((source features, logits), (target features, logits)): one pass of both batches together, or
        one per domain, as `domain_batches` says (see JointOptions)."""
        if self.options.domain_batches == "separate":
            return (classifier(source_images, with_features=True), classifier(target_images, with_features=True))
        features, logits = classifier(torch.cat([source_images, target_images]), with_features=True)
        sizes = [len(source_images), len(target_images)]
        return tuple(zip(features.split(sizes), logits.split(sizes)))

    def fit(self, classifier, source, target, ctx):
        o = self.options
        terms = [(name, weight, loss.to(ctx.device))
                 for name, weight, loss in self.transfer_losses(classifier, classifier.num_classes)]
        reversals = [loss.grl for _, _, loss in terms if isinstance(getattr(loss, "grl", None), GradientReversal)]
        training = SupervisedTraining(classifier, source, target, self.train, ctx,
                                      extra_modules=tuple(loss for _, _, loss in terms))
        iterations = self.train.iterations
        guard = DivergenceGuard(self.stage, iterations, classifier.num_classes, o,
                                {name: loss.chance for name, _, loss in terms if loss.chance is not None})
        domain_accuracy = RecentMean()

        def step(iteration: int) -> dict:
            coefficient = o.reversal_coefficient(iteration, iterations) if reversals else None
            for grl in reversals:
                grl.coefficient = coefficient
            source_images, source_labels = next(training.source)
            target_images, _ = next(training.target)
            with ctx.autocast():
                (source_features, source_logits), (target_features, target_logits) = self.forward_domains(
                    training.parallel_classifier, source_images, target_images)
                loss, scalars = training.classification_loss(source_logits, source_labels)
                for (name, weight, _), transfer in zip(terms, training.parallel_modules):
                    value, extra = transfer(source_features, target_features, source_logits, target_logits)
                    loss = loss + weight * value
                    scalars[name] = value.detach()
                    scalars.update(extra)
            training.update(loss)
            scalars = {"loss/total": loss.detach(), **scalars}
            if "domain/accuracy" in scalars:
                domain_accuracy.add(scalars["domain/accuracy"])
            if coefficient is not None:
                scalars["domain/grl_coefficient"] = coefficient
            scalars["lr"] = training.scheduler.get_last_lr()[0]
            guard.check(iteration + 1, scalars, ctx)
            return scalars

        classifier.train()
        for _, _, loss in terms:
            loss.train()
        state = {**training.state(), **{f"transfer{k}": loss for k, (_, _, loss) in enumerate(terms)},
                 "domain_accuracy": domain_accuracy, "guard": guard}
        train_loop(ctx, self.stage, iterations, step, state, candidate=classifier)
        if domain_accuracy.values:
            report_domain_accuracy(ctx, self.stage, domain_accuracy)
        return classifier
