"""CDAN: conditional adversarial domain adaptation (Long et al., NeurIPS 2018).

DANN with a discriminator on the multilinear map of features and class predictions, h = vec(g fᵀ)
(`ConditionalDomainAdversarialLoss`); `entropy_conditioning: true` weights each sample by
1 + exp(−H(g)) (CDAN+E). Everything else (warm-up, discriminator, guard, optional MCC and BSP) is DANN's.
"""
from __future__ import annotations

from dataclasses import dataclass

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.adversarial import AdversarialOptions, JointAdaptation
from da_toolkit.training.conditional_adversarial import ConditionalDomainAdversarialLoss
from da_toolkit.training.domain_losses import GradientReversal


@dataclass
class CDANOptions(AdversarialOptions):
    entropy_conditioning: bool = False  # CDAN+E: weight samples by 1 + exp(-entropy of the prediction)


@ADAPTERS.register("cdan")
class CDAN(JointAdaptation):
    """CDAN(+E): gradient reversal against a discriminator on features ⊗ class predictions."""

    Options = CDANOptions

    def transfer_losses(self, classifier, num_classes):
        o = self.options
        domain = ConditionalDomainAdversarialLoss(o.discriminator(classifier.feature_dim * num_classes),
                                                  GradientReversal(), o.entropy_conditioning)
        return [("loss/domain", o.trade_off, domain), *o.class_confusion_terms(), *o.spectral_penalty_terms()]
