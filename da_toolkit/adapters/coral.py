"""Deep CORAL (Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation", ECCV 2016
workshops), on the shared classifier's bottleneck features.

Joint training (`adversarial.JointAdaptation`) with one transfer term (`CorrelationAlignmentLoss`):

    L = CE(head(f_s), y_s) + trade_off · ‖C_s − C_t‖²_F / (4 d²)

with C the covariance of each domain's batch of d-dimensional features. The paper adapts fc8 (the
class logits); here the bottleneck features are aligned, as for the other methods of the family.

The recipe (`recipes/_base/methods/coral.yaml`) sends each domain's batch through the classifier on its
own (`domain_batches: separate`): with one mixed batch, batch norm's shared statistics took CORAL below
source-only on three digit tasks; separately it is above it on three and 1.2 points below on
syndigits→MNIST (benchmarks/results/joint-domain-batches/).
"""
from __future__ import annotations

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.adversarial import JointAdaptation, TransferLossOptions
from da_toolkit.training.coral import CorrelationAlignmentLoss


@ADAPTERS.register("coral")
class CORAL(JointAdaptation):
    """Deep CORAL: source cross-entropy plus the distance between the domains' feature covariances."""

    Options = TransferLossOptions

    def transfer_losses(self, classifier, num_classes):
        return [("loss/coral", self.options.trade_off, CorrelationAlignmentLoss())]
