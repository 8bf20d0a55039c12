"""AFN: stepwise adaptive feature norm (Xu et al., "Larger Norm More Transferable: An Adaptive Feature
Norm Approach for Unsupervised Domain Adaptation", ICCV 2019), on the shared classifier's bottleneck
features.

Joint training (`adversarial.JointAdaptation`) with one transfer term (`AdaptiveFeatureNormLoss`):

    L = CE(head(f_s), y_s) + trade_off · Σ_{d ∈ {s, t}} mean_i (‖f_i^d‖ − (‖f_i^d‖.detach() + Δr))²
        [+ target_entropy_trade_off · L_ent(z_t)]

Every step enlarges the feature norms of both domains by about Δr (`norm_increment`). The mean norms are
logged as ``feature_norm/source`` and ``feature_norm/target``. The paper's optional entropy term on the
target predictions (`TargetEntropyLoss`) is `target_entropy_trade_off` (0, off, by default; TLlib's digit
runs use 0.03). Not included: the paper's classifier block (L2-preserving dropout).

The recipe (`recipes/_base/methods/afn.yaml`) sends each domain's batch through the classifier on its own
(`domain_batches: separate`, as TLlib's afn.py), so batch norm normalises each with its own statistics:
with one mixed batch AFN collapsed on both syndigits tasks (11% and 23%); separately, 75.38 and 62.31,
above source-only (benchmarks/results/joint-domain-batches/).
"""
from __future__ import annotations

from dataclasses import dataclass

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.adversarial import JointAdaptation, TargetEntropyOptions, TransferLossOptions
from da_toolkit.errors import UserError
from da_toolkit.training.feature_norm import AdaptiveFeatureNormLoss


@dataclass
class AFNOptions(TargetEntropyOptions, TransferLossOptions):
    trade_off: float = 0.05  # λ, weight of the feature-norm loss (the paper's and TLlib's 0.05)
    norm_increment: float = 1.0  # Δr, how much each step asks every feature norm to grow

    def __post_init__(self):
        if self.norm_increment <= 0:
            raise UserError(f"feature.norm_increment: must be positive, got {self.norm_increment}")


@ADAPTERS.register("afn")
class AFN(JointAdaptation):
    """AFN: source cross-entropy plus the stepwise enlargement of both domains' feature norms."""

    Options = AFNOptions

    def transfer_losses(self, classifier, num_classes):
        return [("loss/feature_norm", self.options.trade_off, AdaptiveFeatureNormLoss(self.options.norm_increment)),
                *self.options.target_entropy_terms()]
