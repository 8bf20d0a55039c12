"""BNM: batch nuclear-norm maximisation on the target predictions (Cui et al., "Towards Discriminability
and Diversity: Batch Nuclear-norm Maximization under Label Insufficient Situations", CVPR 2020).

Joint training (`adversarial.JointAdaptation`) with one transfer term (`BatchNuclearNormLoss`):

    L = CE(head(f_s), y_s) + trade_off · (−‖softmax(z_t)‖_* / B)
"""
from __future__ import annotations

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.adversarial import JointAdaptation, TransferLossOptions
from da_toolkit.training.spectral import BatchNuclearNormLoss


@ADAPTERS.register("bnm")
class BNM(JointAdaptation):
    """BNM: source cross-entropy minus the nuclear norm of the target prediction matrix."""

    Options = TransferLossOptions

    def transfer_losses(self, classifier, num_classes):
        return [("loss/bnm", self.options.trade_off, BatchNuclearNormLoss())]
