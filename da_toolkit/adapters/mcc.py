"""MCC: minimum class confusion on the target predictions (Jin et al., ECCV 2020), on its own.

Joint training with one transfer term, `minimum_class_confusion` of the target logits:
L = CE(head(f_s), y_s) + trade_off · L_mcc(z_t). To add MCC to DANN or CDAN instead, set their
`mcc_trade_off`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.adversarial import JointAdaptation, TransferLossOptions
from da_toolkit.bounds import POSITIVE
from da_toolkit.training.class_confusion import MinimumClassConfusionLoss


@dataclass
class MCCOptions(TransferLossOptions):
    temperature: Annotated[float, POSITIVE] = 2.5  # T of softmax(z / T)


@ADAPTERS.register("mcc")
class MCC(JointAdaptation):
    """MCC: source cross-entropy plus the class confusion of the target predictions."""

    Options = MCCOptions

    def transfer_losses(self, classifier, num_classes):
        return [("loss/mcc", self.options.trade_off, MinimumClassConfusionLoss(self.options.temperature))]
