"""AdaBN: adaptive batch normalisation (Li et al., "Revisiting Batch Normalization For Practical Domain
Adaptation", 2016).

No gradient step: every batch-norm layer of a trained classifier forgets its source statistics and
re-estimates its running mean and variance on target images. The classifier runs in eval mode
(dropout off, as at test time) with only its batch-norm layers in training mode, over
`passes` × ⌊N / B⌋ target batches of the recipe's train.batch_size B (N target training images,
augmentation off). Each layer's momentum is None meanwhile (a cumulative average: running mean
and variance = the mean of the batches' means and unbiased variances), then restored. With one
batch holding the whole target set, the running statistics are that set's mean and variance.

AdaBN adapts only what batch norm normalises: the shared classifier's bottleneck always has a
BatchNorm1d; the dtn and ResNet backbones have BatchNorm2d layers, the lenet backbone and vision
transformers none (then only the bottleneck's statistics change, and the run says so). It is meant
to run after a method that trained the classifier (a source_only feature stage, say).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.base import FeatureAdapter
from da_toolkit.data import BatchStream
from da_toolkit.errors import UserError
from da_toolkit.training.loop import train_loop


@dataclass
class AdaBNOptions:
    """The recipe's keys for `adapter: adabn`."""

    passes: float = 1.0  # walks over the target training set (a fraction: part of one walk)

    def __post_init__(self):
        if not self.passes > 0:
            raise UserError(f"feature.passes: must be positive, got {self.passes}")


@ADAPTERS.register("adabn")
class AdaBN(FeatureAdapter):
    """AdaBN: re-estimate every batch-norm layer's running statistics on target images."""

    Options = AdaBNOptions
    reads_source = False

    def fit(self, classifier, source, target, ctx):
        layers = {name: module for name, module in classifier.named_modules() if isinstance(module, _BatchNorm)}
        if not layers:
            ctx.info(f"{self.stage}: adabn: the classifier has no batch-norm layer, nothing to re-estimate; "
                     f"it is returned unchanged")
            return classifier
        stream = BatchStream(target, self.train.batch_size, ctx.seed + 1, ctx.device)
        batches = max(1, round(self.options.passes * (len(target) // stream.batch_size)))
        ctx.info(f"{self.stage}: adabn re-estimates the running statistics of {len(layers)} batch-norm layer(s) "
                 f"({', '.join(list(layers)[:3])}{', ...' if len(layers) > 3 else ''}) on {batches} target "
                 f"batches of {stream.batch_size}")
        was_training = classifier.training
        momenta = {name: layer.momentum for name, layer in layers.items()}
        classifier.eval()
        for layer in layers.values():
            layer.reset_running_stats()  # a resumed run's checkpoint overwrites these
            layer.momentum = None
            layer.train()

        def step(iteration: int) -> dict:
            images, _ = next(stream)
            with torch.no_grad(), ctx.autocast():
                classifier(images)
            return {}

        try:
            train_loop(ctx, self.stage, batches, step, {"classifier": classifier, "target_stream": stream},
                       candidate=classifier)
        finally:
            for name, layer in layers.items():
                layer.momentum = momenta[name]
            classifier.train(was_training)
        return classifier
