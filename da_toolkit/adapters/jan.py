"""JAN: joint adaptation network (Long et al., "Deep Transfer Learning with Joint Adaptation Networks",
ICML 2017), on the shared classifier's bottleneck features and class predictions.

Joint training (`adversarial.JointAdaptation`) with one transfer term, the joint MMD (`JointMMDLoss`)
whose kernel is the product of DAN's multi-kernel on the features f and a Gaussian kernel of fixed
bandwidth σ_g on the predictions g = softmax(z):

    L = CE(head(f_s), y_s) + trade_off · JMMD²((f_s, g_s), (f_t, g_t))

`estimate`: quadratic (default, as Transfer-Learning-Library's jan.py) or linear. JAN-A (the
adversarial variant) is not included.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.adversarial import JointAdaptation, TransferLossOptions
from da_toolkit.errors import UserError
from da_toolkit.training.mmd import JointMMDLoss


@dataclass
class JANOptions(TransferLossOptions):
    estimate: Literal["linear", "quadratic"] = "quadratic"  # the MMD estimate: all pairs, or linear time
    prediction_bandwidth: float = 0.92  # σ_g of the Gaussian kernel on the softmax predictions

    def __post_init__(self):
        if self.prediction_bandwidth <= 0:
            raise UserError(f"feature.prediction_bandwidth: must be positive, got {self.prediction_bandwidth}")


@ADAPTERS.register("jan")
class JAN(JointAdaptation):
    """JAN: source cross-entropy plus the joint MMD of (features, predictions) between the domains."""

    Options = JANOptions

    def transfer_losses(self, classifier, num_classes):
        o = self.options
        return [("loss/jmmd", o.trade_off, JointMMDLoss(o.estimate, o.prediction_bandwidth))]
