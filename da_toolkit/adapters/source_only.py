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

        def step(iteration: int) -> dict:
            images, labels = next(training.source)
            with ctx.autocast():
                loss, scalars = training.classification_loss(classifier(images), labels)
            training.update(loss)
            return {"loss/total": loss.detach(), **scalars}

        train_loop(ctx, "feature", self.train.iterations, step, training.state())
        return classifier
