"""Checkpoint selection inside a run, without target test labels.

Each stage that trains the classifier a run returns (`feature`, or ADDA's `feature_adapt`, and the
`refine` stage after it: the candidates span both) hands `train_loop` a `candidate`: every `selection.every` iterations and at its last, `Selection.observe`
scores the current model with every validator of validators.py on one fixed, seeded sample (the
same images at every evaluation and on resume): `selection.samples` labeled source validation
images (the source test split, never trained on) and as many unlabeled target training images
(default 500 each: scoring 10 times adds a few per cent to a run), plus the held-out labeled
target fold when `selection.target_label_folds` ≥ 2. ADDA's adaptation also scores its starting
point, the source-trained model. The returned model also predicts `AGREEMENT_IMAGES` target
training images drawn without the run's seed (`agreement_sample`: the same images in every seed of
a task), stored in metrics.json for the recommendation's seed agreement.

`selection.select` names the validator whose best candidate the run returns (ties: the later
iteration), or `last` (the default: the final iterate). The chosen iteration and why are printed
and stored in metrics.json (`model_selection`), with every candidate's scores; TensorBoard shows
the curves under `selection/`. With `selection.record_target_test: true` (benchmark studies only)
each candidate's target test accuracy is recorded beside, labeled as hindsight; no choice reads it.

Nothing here draws from the global random number generator and models are scored in eval mode, so
training is bit-for-bit the same with and without selection. The selection's state (candidates,
best weights) is checkpointed with the stage: a resumed run chooses as an uninterrupted one.

Cross-fitted labeled target accuracy: with F = `selection.target_label_folds` ≥ 2, the k labeled
target images of each class are dealt in turn into F folds; the run with seed s trains on every fold
but fold s mod F and validates on fold s mod F (whose images stay in the target set, unlabeled). No
image is both trained on and validated on in a run; the mean over F consecutive seeds validates on
every fold once (a seed also draws which k images are labeled).
"""
from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from da_toolkit.data import Domain
from da_toolkit.data.base import UNLABELED, device_batches
from da_toolkit.errors import UserError
from da_toolkit.evaluate import predict
from da_toolkit.validators import (VALIDATORS, accuracy, batch_nuclear_norm, class_adjusted_mutual_information,
                                   deep_embedded_validation, importance_weights, information_maximization,
                                   negative_entropy, soft_neighbourhood_density, target_knn_precision)

HINDSIGHT = ("target_test_accuracy: hindsight, recorded for benchmark studies only (selection.record_target_test); "
             "never used to choose")
SAMPLE_SEED_OFFSET = 7919  # the selection sample's own generator: seed + this, never the global RNG
# the agreement sample: this many target training images (all, if fewer), drawn with SAMPLE_SEED_OFFSET alone;
# predicted once per run; two seeds' agreement over 2,000 images has a standard error under 0.5 points at 95 %
AGREEMENT_IMAGES = 2000


def file_fingerprint(file: Path | None) -> str | None:
    """The first 16 hex digits of the SHA-256 of `file`'s bytes (None for None): which trained classifier a run
    started from, whatever its path."""
    if file is None:
        return None
    digest = hashlib.sha256()
    with open(file, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def hold_out_target_labels(target: Domain, folds: int, seed: int) -> tuple[Domain, Domain]:
    """(target training set without the held-out fold's labels, the held-out labeled images): the labeled
    images of each class, in index order, dealt into `folds` folds in turn; fold seed mod folds is held out."""
    labeled = torch.nonzero(target.labels != UNLABELED).flatten()
    held = []
    for cls in range(target.num_classes):
        members = labeled[target.labels[labeled] == cls]
        held.append(members[torch.arange(len(members)) % folds == seed % folds])
    held_out = torch.cat(held).sort().values
    labels = target.labels.clone()
    labels[held_out] = UNLABELED
    return (target.with_labels(labels),
            target.subset(held_out, f"{target.name}[held-out fold {seed % folds} of {folds}]"))


@contextlib.contextmanager
def _in_eval_mode(model: torch.nn.Module):
    """`model` in eval mode inside, each module's own mode restored after (ADDA's C ∘ M_t is mixed)."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.train(training)


@torch.no_grad()
def _features_and_logits(model, domain: Domain, device, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    features, logits = [], []
    for batch in device_batches(domain, device, batch_size):
        f = model.features(batch)
        features.append(f.float().cpu())
        logits.append(model.head(f).float().cpu())
    return torch.cat(features), torch.cat(logits)


class Selection:
    """Scores candidates of the returned classifier with every validator; keeps the chosen one (Stateful)."""

    def __init__(self, options, source_validation: Domain | None, target: Domain,
                 target_test: Domain | None, held_out: Domain | None, ctx, batch_size: int = 500,
                 starts_from: str | None = None):
        """`starts_from`: `file_fingerprint` of the trained classifier the run started from (SHOT's source
        checkpoint), stored with the agreement sample; None when it trained from the backbone's initial weights."""
        self.options, self.ctx, self.batch_size, self.starts_from = options, ctx, batch_size, starts_from
        generator = torch.Generator().manual_seed(ctx.seed + SAMPLE_SEED_OFFSET)
        # decoded once (a streamed domain's sample is read into memory: scored 10 times a run)
        self.source = (source_validation.sample(options.samples, generator).in_memory()
                       if source_validation is not None else None)  # None: a source-free run
        self.target = target.without_labels().sample(options.samples, generator).in_memory()
        # the same target images in every seed of a task: the recommendation's seed agreement compares the
        # seeds' predictions of them (recommend.with_seed_agreement); read once, when the run returns its model,
        # so a streamed domain's images are not held in memory for it
        self.agreement_sample = target.without_labels().sample(
            AGREEMENT_IMAGES, torch.Generator().manual_seed(SAMPLE_SEED_OFFSET))
        self.held_out = held_out.in_memory() if held_out is not None else None
        self.target_test = target_test if options.record_target_test else None
        self.candidates: list[dict] = []
        self.best: dict | None = None  # {"score", "index", "weights"} of the `select` validator's best candidate
        self.seconds = {"validators": 0.0, "target_test_study": 0.0}

    def every(self, iterations: int) -> int:
        """Evaluate every this many iterations of a stage of `iterations` (`selection.every`, or 10 times)."""
        return self.options.every or max(1, iterations // 10)

    def scores(self, model) -> dict[str, float]:
        """Every validator's score of `model` (in eval mode) on the fixed sample (a source-free run: those that
        read target images only)."""
        device = self.ctx.device
        target_features, target_logits = _features_and_logits(model, self.target, device, self.batch_size)
        source_features, source_logits = (_features_and_logits(model, self.source, device, self.batch_size)
                                          if self.source is not None else (target_features, target_logits))
        if not all(torch.isfinite(t).all() for t in (source_features, source_logits, target_features, target_logits)):
            raise UserError(f"{self.ctx.run_dir}: its classifier gives non-finite features or logits on the "
                            f"selection sample (weights damaged, or weights that overflow); no validator can score it")
        scores = {"entropy": negative_entropy(target_logits),
                  "info_max": information_maximization(target_logits),
                  "snd": soft_neighbourhood_density(target_logits),
                  "bnm": batch_nuclear_norm(target_logits),
                  "class_ami": class_adjusted_mutual_information(target_features, target_logits, self.ctx.seed)}
        if self.source is not None:
            half = len(self.source) // 2  # DEV: the domain classifier is fitted on one half, the other is weighted
            weights = importance_weights(source_features[:half].numpy(), target_features.numpy(),
                                         source_features[half:].numpy(), self.ctx.seed)
            losses = F.cross_entropy(source_logits[half:], self.source.labels[half:], reduction="none")
            scores.update(source_accuracy=accuracy(source_logits, self.source.labels),
                          dev=deep_embedded_validation(losses, torch.from_numpy(weights)),
                          target_knn=target_knn_precision(target_features, target_logits, source_features,
                                                          self.source.labels))
            scores = {name: scores[name] for name in VALIDATORS if name in scores}  # the order of VALIDATORS
        if self.held_out is not None:
            _, logits = _features_and_logits(model, self.held_out, device, self.batch_size)
            scores["target_label_accuracy"] = accuracy(logits, self.held_out.labels)
        assert set(scores) <= set(VALIDATORS)
        return {name: round(value, 6) for name, value in scores.items()}

    def observe(self, stage: str, iteration: int, model: torch.nn.Module) -> None:
        """Score `model` as the candidate after `iteration` steps of `stage`; the main process only."""
        if not self.ctx.main:
            return
        with _in_eval_mode(model):
            began = time.perf_counter()
            candidate = {"stage": stage, "iteration": iteration, "scores": self.scores(model)}
            self.seconds["validators"] += time.perf_counter() - began
            if self.target_test is not None:
                began = time.perf_counter()
                predictions = predict(model, self.target_test, self.ctx.device, self.batch_size)
                candidate["target_test_accuracy"] = round(float((predictions == self.target_test.labels)
                                                                .double().mean()), 4)
                self.seconds["target_test_study"] += time.perf_counter() - began
        self.candidates.append(candidate)
        self.ctx.log_scalars("selection", len(self.candidates), candidate["scores"])
        select = self.options.select
        if select != "last":
            score = candidate["scores"][select]
            if self.best is None or score >= self.best["score"]:
                self.best = {"score": score, "index": len(self.candidates) - 1,
                             "weights": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}

    def choose(self, classifier: torch.nn.Module) -> tuple[str, dict]:
        """Load the chosen candidate's weights into `classifier` (`select` ≠ last); (one line saying what was
        chosen and why, the metrics.json entry)."""
        select, last = self.options.select, len(self.candidates) - 1
        if select == "last" or self.best is None:
            index = last
            why = "the last iterate (selection.select: last)"
        else:
            index = self.best["index"]
            classifier.load_state_dict(self.best["weights"])
            best = self.candidates[index]["scores"][select]
            final = self.candidates[last]["scores"][select]
            why = (f"the best {select} score of {len(self.candidates)} candidates ({best:.4g}; last iterate "
                   f"{final:.4g}); no target label was read")
        chosen = self.candidates[index] if self.candidates else {"stage": None, "iteration": None}
        line = (f"model selection: {chosen['stage']} iteration {chosen['iteration']} chosen: {why}"
                if self.candidates else "model selection: no candidate was scored")
        entry = {"select": select, "chosen": {"stage": chosen["stage"], "iteration": chosen["iteration"], "index": index,
                                              "why": why},
                 "validators": {name: VALIDATORS[name] for name in (self.candidates[0]["scores"] if self.candidates
                                                                    else {})},
                 "samples": {"source_validation": len(self.source) if self.source is not None else 0,
                             "target": len(self.target),
                             "held_out_target": len(self.held_out) if self.held_out is not None else 0},
                 "candidates": self.candidates,
                 "agreement_sample": self.agreement(classifier),
                 "wall_time_s": {k: round(v, 2) for k, v in self.seconds.items()}}
        if self.target_test is not None:
            entry["note"] = HINDSIGHT
        return line, entry

    def agreement(self, classifier: torch.nn.Module) -> dict:
        """metrics.json's `agreement_sample`: `classifier`'s predicted class of each image of the agreement sample
        (scored in eval mode, its modes restored), with the sample's seed and size, and `starts_from` when set."""
        with _in_eval_mode(classifier):
            predictions = predict(classifier, self.agreement_sample, self.ctx.device, self.batch_size)
        start = {"starts_from": self.starts_from} if self.starts_from is not None else {}
        return {"seed": SAMPLE_SEED_OFFSET, "images": len(self.agreement_sample), **start,
                "predictions": predictions.tolist()}

    def state_dict(self) -> dict:
        return {"candidates": self.candidates, "best": self.best, "seconds": dict(self.seconds)}

    def load_state_dict(self, state: dict) -> None:
        self.candidates = list(state["candidates"])
        self.best = state["best"]
        self.seconds = dict(state["seconds"])
