"""Source-only baseline: the lower bound every adaptation method must beat."""
from __future__ import annotations

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.base import FeatureAdapter, SupervisedTraining
from da_toolkit.training.loop import train_loop


@ADAPTERS.register("source_only")
class SourceOnly(FeatureAdapter):
    """Supervised training on labeled source (+ any labeled target images); no adaptation."""

    def fit(self, classifier, source, target, ctx):
        training = SupervisedTraining(classifier, source, target, self.train, ctx)
        classifier.train()
        train_loop(ctx, self.stage, self.train.iterations, training.supervised_step, training.state(),
                   candidate=classifier)
        return classifier
