"""DANN: domain-adversarial training of the shared classifier (Ganin & Lempitsky 2015; Ganin et al. 2016).

Joint training (`adversarial.JointAdaptation`) with one transfer term, the domain loss through the
gradient reversal layer (`DomainAdversarialLoss`):

    L = CE(head(f_s), y_s) + trade_off · ½ ( mean_s −log D(R_λ(f_s)) + mean_t −log(1 − D(R_λ(f_t))) )
        [+ mcc_trade_off · L_mcc(z_t)] [+ bsp_trade_off · L_bsp(f_s, f_t)]

D descends the domain loss while the features ascend it. λ warms up over iterations (see
`AdversarialOptions.reversal_coefficient`); the learning rate follows the recipe's `train` section.
Discriminator accuracy is logged as ``domain/accuracy``: it drifts towards 0.5 as the domains align.
"""
from __future__ import annotations

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.adversarial import AdversarialOptions, JointAdaptation
from da_toolkit.training.domain_losses import DomainAdversarialLoss, GradientReversal


@ADAPTERS.register("dann")
class DANN(JointAdaptation):
    """DANN: gradient reversal against a domain discriminator on the classifier's features."""

    Options = AdversarialOptions

    def transfer_losses(self, classifier, num_classes):
        o = self.options
        domain = DomainAdversarialLoss(o.discriminator(classifier.feature_dim), GradientReversal())
        return [("loss/domain", o.trade_off, domain), *o.class_confusion_terms(), *o.spectral_penalty_terms()]
