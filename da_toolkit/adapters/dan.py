"""DAN: deep adaptation network (Long et al., "Learning Transferable Features with Deep Adaptation
Networks", ICML 2015), on the shared classifier's bottleneck features.

Joint training (`adversarial.JointAdaptation`) with one transfer term, the multi-kernel MMD of the
source and target features (`MultipleKernelMMDLoss`):

    L = CE(head(f_s), y_s) + trade_off · MMD²_k(f_s, f_t)

Gaussian kernels of bandwidths σ_u² = 2^u · mean pairwise squared distance, u = −3..1, summed;
`estimate`: linear (default, DAN's linear-time estimate) or quadratic. Unlike the paper, one layer (the
bottleneck) is adapted, not fc6-fc8, and the kernel weights β are fixed (equal), not learned.

The recipe (`recipes/_base/methods/dan.yaml`) sends each domain's batch through the classifier on its own
(`domain_batches: separate`, as TLlib's dan.py): with one mixed batch the divergence guard stopped a
syndigits→MNIST seed (benchmarks/results/joint-domain-batches/).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from da_toolkit.adapters import ADAPTERS
from da_toolkit.adapters.adversarial import JointAdaptation, TransferLossOptions
from da_toolkit.training.mmd import MultipleKernelMMDLoss


@dataclass
class DANOptions(TransferLossOptions):
    estimate: Literal["linear", "quadratic"] = "linear"  # the MMD estimate: linear time, or all pairs


@ADAPTERS.register("dan")
class DAN(JointAdaptation):
    """DAN: source cross-entropy plus the multi-kernel MMD between source and target features."""

    Options = DANOptions

    def transfer_losses(self, classifier, num_classes):
        return [("loss/mmd", self.options.trade_off, MultipleKernelMMDLoss(self.options.estimate))]
