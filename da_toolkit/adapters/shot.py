"""SHOT: source hypothesis transfer (Liang et al., "Do We Really Need to Access the Source Data? Source
Hypothesis Transfer for Unsupervised Domain Adaptation", ICML 2020). Source-free: it adapts a trained
source classifier to the target without reading a single source image.

1. As the feature stage, the classifier starts as the source classifier of `feature.source_checkpoint`
   (a finished run directory, e.g. a source_only run, or its classifier.pt), read weights-only; its
   class count and architecture must be this run's. As a refine stage (`refine: {adapter: shot}`, no
   source_checkpoint) it starts from the classifier the feature stage returned, e.g. MCC's: that
   stage read the source, this one still does not.
2. The head C (the source hypothesis) is frozen; the encoder (backbone + bottleneck) trains on the
   unlabeled target images, in train mode, with the recipe's `train` settings (SGD, Nesterov
   momentum, the LR schedule; recipes/_base/methods/shot.yaml sets the authors' values), minimising

       L = L_im + β · CE(C(encoder(x_t)), ŷ_t)   [+ CE on a batch of labeled target images]

   L_im = mean_i H(p_i) − H(mean_i p_i) (training/information_maximisation.py) and ŷ_t the
   pseudo-labels of the weighted clustering of all target features (`cluster_pseudo_labels`),
   recomputed in eval mode every `pseudo_label_every` iterations (default: once per pass over the
   target, the paper's epoch) and at the first. β = 0 is SHOT-IM (no clustering). The labeled-target
   term exists only in the scarce-label setting.
3. A `DiversityGuard` watches the run: a non-finite loss, or the batch predictions collapsing onto
   a few classes (there is no source loss to judge here).

The pseudo-labels are part of the stage's checkpoint, so a resumed run is bit-identical. The model
selection scores the classifier it starts from first (score_start), so it can fall back to it.

With `data.source: null` the whole run is source-free (`reads_source = False`, recipe.py
`_check_source_free`): no source domain is built, and the target's classes are matched by name to
the class names the checkpoint records (`source_classes`).

What the source training of the paper has and ours (source_only) lacks: label smoothing 0.1 and a
weight-normalised head; a SHOT run here starts from the toolkit's plain source classifier.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.adversarial import DivergenceGuard, GuardOptions
from da_toolkit.adapters.base import FeatureAdapter, SupervisedTraining
from da_toolkit.data.base import UNLABELED, device_batches
from da_toolkit.errors import UserError
from da_toolkit.rundir import read_classifier, read_classifier_classes
from da_toolkit.training.checkpoint import UnreadableFile, load_state
from da_toolkit.training.information_maximisation import cluster_pseudo_labels, information_maximisation
from da_toolkit.training.loop import train_loop


@dataclass
class SHOTOptions(GuardOptions):
    """The recipe's `feature:` keys for `adapter: shot` (defaults: the authors' for office tasks)."""

    source_checkpoint: str | None = None  # a finished run directory (its classifier.pt) or a classifier.pt file
    transfer_weights: ClassVar[tuple[str, ...]] = ("pseudo_label_weight",)  # the guard's message names it
    pseudo_label_weight: float = 0.3  # β of the pseudo-label cross-entropy (authors: 0.3; 0.1 on digits); 0: SHOT-IM
    pseudo_label_every: int | None = None  # recluster every N iterations; null: once per pass over the target

    def __post_init__(self):
        if self.pseudo_label_weight < 0:
            raise UserError(f"feature.pseudo_label_weight: must be zero or more, got {self.pseudo_label_weight}")
        if self.pseudo_label_every is not None and self.pseudo_label_every < 1:
            raise UserError(f"feature.pseudo_label_every: must be a positive number of iterations or null, got "
                            f"{self.pseudo_label_every}")


def source_classifier_file(location: str, key: str = "feature.source_checkpoint") -> Path:
    """The classifier.pt at `location` (a run directory or the file itself); one-line UserError naming `key`
    when there is none."""
    path = Path(location)
    file = path / "classifier.pt" if path.is_dir() else path
    if not file.is_file():
        what = "a run directory without classifier.pt (not finished?)" if path.is_dir() else "no such file or directory"
        raise UserError(f"{key}: {path}: {what}; train the source classifier first (a source_only run)")
    return file


def load_source_classifier(classifier: torch.nn.Module, location: str, key: str = "feature.source_checkpoint") -> None:
    """Load the source classifier at `location` (a run directory or a classifier.pt file) into `classifier`,
    weights-only; one-line UserError naming `key` and the file when it is missing, unreadable, of another
    class count or of another architecture."""
    file = source_classifier_file(location, key)
    try:
        state, num_classes = read_classifier(file)
        if num_classes != classifier.num_classes:
            raise UserError(f"{key}: {file} is a classifier of {num_classes} classes, this run's data has "
                            f"{classifier.num_classes}")
        load_state(classifier, state, file, "classifier weights")
    except UnreadableFile as error:
        raise UserError(f"{key}: {error}") from None


class PseudoLabels:
    """The target stream's pseudo-labels (Stateful, checkpointed with the stage): `refresh` reclusters the
    target features and hands the labels to the stream; a restored state hands over the saved ones."""

    def __init__(self, stream, count: int):
        self.stream = stream
        self.labels = torch.full((count,), UNLABELED, dtype=torch.int64)
        self.agreement = 0.0  # share of pseudo-labels equal to the model's own prediction (no target label read)

    @torch.no_grad()
    def refresh(self, classifier, target, device, batch_size: int) -> None:
        modes = {module: module.training for module in classifier.modules()}
        classifier.eval()
        features, probabilities = [], []
        for batch in device_batches(target, device, batch_size):
            f = classifier.features(batch)
            features.append(f.float().cpu())
            probabilities.append(F.softmax(classifier.head(f).float(), dim=1).cpu())
        for module, training in modes.items():
            module.train(training)
        probabilities = torch.cat(probabilities)
        self.labels = cluster_pseudo_labels(torch.cat(features), probabilities)
        self.agreement = float((self.labels == probabilities.argmax(dim=1)).double().mean())
        self.stream.relabel(self.labels)

    def state_dict(self) -> dict:
        return {"labels": self.labels, "agreement": self.agreement}

    def load_state_dict(self, state: dict) -> None:
        self.labels = state["labels"].cpu()
        self.agreement = float(state["agreement"])
        self.stream.relabel(self.labels)


class DiversityGuard(DivergenceGuard):
    """The divergence guard of a source-free method: no source loss to judge, so besides a non-finite loss it
    watches the effective classes of the batch's mean prediction, exp(H(p̄)), over the last `window`
    iterations: below a quarter of the classes a batch can show, min(C, B) / 4, the predictions
    have collapsed onto a few classes (information maximisation should prevent exactly that)."""

    watched = ("predictions/effective_classes",)

    def __init__(self, stage: str, iterations: int, num_classes: int, batch_size: int, options: GuardOptions):
        super().__init__(stage, iterations, num_classes, options, chances={})
        self.bar = min(num_classes, batch_size) / 4

    def stalled(self) -> str | None:
        mean = self.means["predictions/effective_classes"]
        if mean.mean() < self.bar:
            return (f"the target predictions collapsed: their batch mean uses {mean.mean():.2f} effective classes "
                    f"(below {self.bar:.2f}, a quarter of min(classes, batch); mean of the last "
                    f"{mean.values.maxlen} iterations); likely cause: train.lr or "
                    f"{self.stage}.pseudo_label_weight too large, or a source classifier that fits the target badly")
        return None


@ADAPTERS.register("shot")
class SHOT(FeatureAdapter):
    """SHOT: the source head frozen, the encoder trained on target images by information maximisation and
    clustering pseudo-labels; never reads a source image."""

    Options = SHOTOptions
    reads_source = False

    @classmethod
    def check(cls, options: SHOTOptions, image_size: int, channels: int, stage: str) -> None:
        """A feature stage adapts the source classifier its source_checkpoint names; a refine stage adapts the
        classifier the feature stage returned, so it names none."""
        if stage == "feature" and options.source_checkpoint is None:
            raise UserError("feature.source_checkpoint: missing: SHOT adapts a trained source classifier; train one "
                            "(e.g. da-toolkit run recipes/<task>_source_only.yaml) and name its run directory")
        if stage == "refine" and options.source_checkpoint is not None:
            raise UserError(f"refine.source_checkpoint: a refine stage adapts the classifier the feature stage "
                            f"returned, not a checkpoint; remove the key (null), or run SHOT as the feature stage "
                            f"(got {options.source_checkpoint})")

    def source_classes(self) -> tuple[int, tuple[str, ...], str]:
        key = f"{self.stage}.source_checkpoint"
        file = source_classifier_file(self.options.source_checkpoint, key)
        try:
            num_classes, names, source = read_classifier_classes(file)
        except UnreadableFile as error:
            raise UserError(f"{key}: {error}") from None
        if names is None:
            raise UserError(f"{key}: {file} does not record its class names (written before "
                            f"da-toolkit stored them); a source-free run (data.source: null) matches the target's classes "
                            f"to them by name: re-train the source classifier, or name data.source")
        return num_classes, names, source or "source"

    def starting_classifier(self) -> Path | None:
        if self.options.source_checkpoint is None:  # a refine stage
            return None
        return source_classifier_file(self.options.source_checkpoint, f"{self.stage}.source_checkpoint")

    def check_inputs(self, num_classes: int) -> None:
        if self.options.source_checkpoint is None:  # a refine stage
            return
        with torch.random.fork_rng(devices=[]):  # the run's random stream is untouched
            load_source_classifier(self.setup.make_classifier(num_classes), self.options.source_checkpoint,
                                   f"{self.stage}.source_checkpoint")

    def fit(self, classifier, source, target, ctx):
        o = self.options
        if o.source_checkpoint is not None:  # a feature stage; a refine stage adapts the classifier it is given
            load_source_classifier(classifier, o.source_checkpoint, f"{self.stage}.source_checkpoint")
        classifier.head.requires_grad_(False)  # the source hypothesis stays; the optimiser gets the encoder only
        training = SupervisedTraining(classifier, None, target, self.train, ctx)
        iterations = self.train.iterations
        every = o.pseudo_label_every or max(1, len(target) // self.train.batch_size)
        pseudo_labels = PseudoLabels(training.target, len(target)) if o.pseudo_label_weight > 0 else None
        guard = DiversityGuard(self.stage, iterations, classifier.num_classes, self.train.batch_size, o)

        def step(iteration: int) -> dict:
            if pseudo_labels is not None and iteration % every == 0:
                pseudo_labels.refresh(classifier, target, ctx.device, self.train.eval_batch_size)
            images, labels = next(training.target)  # labels: the pseudo-labels (unused by SHOT-IM)
            with ctx.autocast():
                logits = training.parallel_classifier(images)
                im, individual, diversity = information_maximisation(logits)
                loss = im
                scalars = {"loss/information_maximisation": im.detach(), "loss/entropy": individual.detach(),
                           "loss/diversity": diversity.detach(),
                           "predictions/effective_classes": torch.exp(diversity.detach())}
                if pseudo_labels is not None:
                    pseudo_label_loss = F.cross_entropy(logits, labels)
                    loss = loss + o.pseudo_label_weight * pseudo_label_loss
                    scalars["loss/pseudo_label_ce"] = pseudo_label_loss.detach()
                    scalars["pseudo_labels/agreement"] = pseudo_labels.agreement
                labeled_loss = training.labeled_target_loss()
                if labeled_loss is not None:
                    loss = loss + labeled_loss
                    scalars["loss/labeled_target_ce"] = labeled_loss.detach()
            training.update(loss)
            scalars = {"loss/total": loss.detach(), **scalars, "lr": training.scheduler.get_last_lr()[0]}
            guard.check(iteration + 1, scalars, ctx)
            return scalars

        classifier.train()
        state = {**training.state(), "guard": guard}
        if pseudo_labels is not None:
            state["pseudo_labels"] = pseudo_labels
        train_loop(ctx, self.stage, iterations, step, state, candidate=classifier, score_start=True)
        return classifier

