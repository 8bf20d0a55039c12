"""MDD: margin disparity discrepancy (Zhang et al., ICML 2019).

Joint training (`adversarial.JointAdaptation`) with one transfer term (`MarginDisparityDiscrepancyLoss`):

    L = CE(h(f_s), y_s) + trade_off · ( γ · CE(h'(R_λ f_s), ŷ_s) − log(1 − softmax(h'(R_λ f_t))[ŷ_t]) )

with h the classifier's head, ŷ = argmax h(f), and h' an adversarial head of the same shape as h
(one linear layer on the bottleneck features; Transfer-Learning-Library gives both heads a hidden
layer of 1024, this toolkit's shared classifier has a linear head, so h' is linear too). h' learns
to agree with h on source and to disagree on target; the features, through R_λ, learn the opposite.
λ warms up as Transfer-Learning-Library's MDD does: λ_i = 0.1 (2 / (1 + exp(−i / 1000)) − 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from torch import nn

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.adversarial import WARMUP, JointAdaptation, JointOptions, ReversalOptions
from da_toolkit.bounds import NON_NEGATIVE, POSITIVE
from da_toolkit.training.margin_disparity import MarginDisparityDiscrepancyLoss


@dataclass
class MDDOptions(ReversalOptions, JointOptions):
    """The recipe's `feature:` keys for `adapter: mdd`; defaults are Transfer-Learning-Library's mdd.py flags."""

    trade_off: Annotated[float, NON_NEGATIVE] = 1.0  # weight of the MDD term
    margin: Annotated[float, POSITIVE] = 4.0  # γ: weight of the source disparity (the margin factor, γ = exp(ρ))
    grl_coefficient: Annotated[float, NON_NEGATIVE] = 0.1  # λ's final value (TLlib's WarmStartGradientReverseLayer hi=0.1)
    grl_gamma: Annotated[float, NON_NEGATIVE] = 1.0  # TLlib's alpha=1
    grl_warmup: Annotated[int, WARMUP] | None = 1000  # TLlib's max_iters=1000


@ADAPTERS.register("mdd")
class MDD(JointAdaptation):
    """MDD: an adversarial head maximises the margin disparity between domains; the features minimise it."""

    Options = MDDOptions

    def transfer_losses(self, classifier, num_classes):
        adversary = nn.Linear(classifier.feature_dim, num_classes)
        return [("loss/mdd", self.options.trade_off, MarginDisparityDiscrepancyLoss(adversary, self.options.margin))]
