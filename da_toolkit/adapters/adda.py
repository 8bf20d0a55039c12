"""ADDA: adversarial discriminative domain adaptation (Tzeng et al. 2017), with untied weights.

1. stage ``feature_pretrain``: the source encoder M_s and the head C are trained on labeled
   source (+ any labeled target images) with CE and the recipe's `train` settings.
2. the target encoder M_t is initialised as a copy of M_s.
3. stage ``feature_adapt``: M_s and C are frozen (requires_grad off, M_s in eval mode so its
   batch-norm statistics stay fixed); M_t trains in train mode (its dropout on, its batch norm on
   target batch statistics). The two encoders are thus in different modes, and D could tell them
   apart by dropout noise alone. Both in one mode was measured on this project's CPU (one thread,
   2,500 + 2,500 iterations, MNIST→USPS): dropout off and batch norm on batch statistics in both
   85.80 ± 1.05% (3 seeds), both in eval mode 87.29% (seed 0), dropout on in both 83.96% (seed
   0), against 89.6% for these modes; the quickstart lost 5 points likewise. The dropout noise on
   M_t regularises more than it leaks, so these modes stay until a study over tasks and seeds says
   otherwise. Each iteration takes one Adam step of the discriminator D on

       L_advD = −E[log D(M_s(x_s))] − E[log(1 − D(M_t(x_t)))]

   then one Adam step of M_t on the GAN loss with inverted labels

       L_advM = −E[log D(M_t(x_t))]   [+ CE(C(M_t(x_l)), y_l) on a batch of labeled target images]

   The CE term exists only in the scarce-label setting (data.target_labels_per_class > 0): the
   few labeled target images then supervise M_t directly through the frozen head.
4. the returned classifier is C ∘ M_t: the target encoder with the source head, unchanged. Model
   selection (selection.py) scores C ∘ M_t during adaptation, from its start (M_t = M_s) on.

Both stages go through `train_loop`, so a run interrupted during adaptation resumes there: the
finished pre-training stage is restored from its checkpoint, not retrained, and M_t, D and their
optimisers come back from the adaptation checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.base import FeatureAdapter, SupervisedTraining
from da_toolkit.adapters.adversarial import DROPOUT, RecentMean, report_domain_accuracy
from da_toolkit.models import DomainDiscriminator
from da_toolkit.bounds import NON_NEGATIVE, POSITIVE, WIDTH, Range
from da_toolkit.training.domain_losses import domain_classification_loss, inverted_label_loss
from da_toolkit.training.loop import train_loop


ADAM_BETA = Range(0, 1, high_open=True, why="Adam's moving-average factor")


@dataclass
class ADDAOptions:
    """The recipe's `feature:` keys for `adapter: adda`. Defaults are the paper's (Adam 2e-4, β₁ 0.5; 500-500 D)."""

    pretrain_iterations: Annotated[int, NON_NEGATIVE] | None = None  # source pre-training; None: train.iterations
    adapt_iterations: Annotated[int, NON_NEGATIVE] = 10000  # adversarial adaptation of the target encoder
    encoder_lr: Annotated[float, POSITIVE] = 2e-4
    discriminator_lr: Annotated[float, POSITIVE] = 2e-4
    beta1: Annotated[float, ADAM_BETA] = 0.5
    beta2: Annotated[float, ADAM_BETA] = 0.999
    discriminator_hidden: list[Annotated[int, WIDTH]] = field(default_factory=lambda: [500, 500])
    discriminator_batch_norm: bool = False
    discriminator_dropout: Annotated[float, DROPOUT] = 0.0


@ADAPTERS.register("adda")
class ADDA(FeatureAdapter):
    """ADDA: a separate target encoder trained adversarially against the frozen source encoder."""

    Options = ADDAOptions

    def fit(self, classifier, source, target, ctx):
        o = self.options
        pretrain_iterations = self.train.iterations if o.pretrain_iterations is None else o.pretrain_iterations
        training = SupervisedTraining(classifier, source, target, self.train, ctx, iterations=pretrain_iterations)
        classifier.train()
        train_loop(ctx, f"{self.stage}_pretrain", pretrain_iterations, training.supervised_step, training.state())

        classifier.eval().requires_grad_(False)  # M_s and C stay as pre-trained
        # modes: see the docstring
        target_encoder = classifier.copy_encoder().train().requires_grad_(True)
        source_encoder, classifier.encoder = classifier.encoder, target_encoder  # classifier = C ∘ M_t from here
        discriminator = DomainDiscriminator(classifier.feature_dim, o.discriminator_hidden, o.discriminator_batch_norm,
                                            o.discriminator_dropout).to(ctx.device)
        # what the steps call to train M_t and D: data-parallel wrappers (the networks themselves in one
        # process); D frozen in M_t's step is called as it is
        parallel_encoder, parallel_discriminator = ctx.distribute(target_encoder), ctx.distribute(discriminator)
        betas = (o.beta1, o.beta2)
        encoder_optimizer = torch.optim.Adam(target_encoder.parameters(), o.encoder_lr, betas=betas)
        discriminator_optimizer = torch.optim.Adam(discriminator.parameters(), o.discriminator_lr, betas=betas)
        domain_accuracy = RecentMean()

        def step(iteration: int) -> dict:
            source_images, _ = next(training.source)
            target_images, _ = next(training.target)
            with ctx.autocast():
                with torch.no_grad():
                    source_features = source_encoder(source_images)
                target_features = parallel_encoder(target_images)
                logits = parallel_discriminator(torch.cat([source_features, target_features.detach()]))
                source_logits, target_logits = logits.split([len(source_images), len(target_images)])
                discriminator_loss, accuracy = domain_classification_loss(source_logits, target_logits)
            ctx.backward_step(discriminator_loss, discriminator_optimizer)

            discriminator.requires_grad_(False)
            with ctx.autocast():
                mapping_loss = inverted_label_loss(discriminator(target_features))
                scalars = {"loss/discriminator": discriminator_loss.detach(), "loss/mapping": mapping_loss.detach(),
                           "domain/accuracy": accuracy}
                encoder_loss = mapping_loss
                if training.labeled_target is not None:
                    labeled_images, labels = next(training.labeled_target)
                    labeled_loss = F.cross_entropy(classifier.head(parallel_encoder(labeled_images)), labels)
                    scalars["loss/labeled_target_ce"] = labeled_loss.detach()
                    encoder_loss = encoder_loss + labeled_loss
            ctx.backward_step(encoder_loss, encoder_optimizer)
            discriminator.requires_grad_(True)
            domain_accuracy.add(accuracy)
            return scalars

        state = {"target_encoder": target_encoder, "discriminator": discriminator,
                 "encoder_optimizer": encoder_optimizer, "discriminator_optimizer": discriminator_optimizer,
                 "domain_accuracy": domain_accuracy, **{k: v for k, v in training.state().items()
                                                        if k.endswith("stream")}}
        train_loop(ctx, f"{self.stage}_adapt", o.adapt_iterations, step, state, candidate=classifier, score_start=True)
        report_domain_accuracy(ctx, self.stage, domain_accuracy)
        target_encoder.eval()
        return classifier
