"""Maximum mean discrepancy between feature batches: DAN's MK-MMD (Long et al., "Learning Transferable
Features with Deep Adaptation Networks", ICML 2015) and JAN's joint MMD (Long et al., "Deep Transfer
Learning with Joint Adaptation Networks", ICML 2017).

Notation: X = [x^s_1..x^s_n; x^t_1..x^t_m] the source and target rows stacked, K its kernel matrix
(K_ij = k(x_i, x_j)), D_ij = ‖x_i − x_j‖² its squared distances.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Estimate = Literal["linear", "quadratic"]

# DAN's family of Gaussian kernels (as in Transfer-Learning-Library): σ_u² = 2^u · mean(D), u = −3..1
BANDWIDTH_MULTIPLIERS = tuple(2.0 ** u for u in range(-3, 2))


def squared_distances(rows: torch.Tensor) -> torch.Tensor:
    """D_ij = ‖x_i − x_j‖² of the rows of an N×F matrix (through the Gram matrix, clamped at 0), in float32
    with autocast off: in bf16, ‖x‖² + ‖y‖² − 2 x·y of nearby rows would cancel to noise."""
    rows = rows.float()
    with torch.autocast(rows.device.type, enabled=False):
        norms = (rows * rows).sum(1)
        return (norms.unsqueeze(1) + norms.unsqueeze(0) - 2 * rows @ rows.t()).clamp_min(0)


def multi_gaussian_kernel(rows: torch.Tensor, multipliers: tuple[float, ...] = BANDWIDTH_MULTIPLIERS) -> torch.Tensor:
    """K = Σ_u exp(−D / (2 σ_u²)) with σ_u² = m_u · mean_ij D_ij (the mean over all N² pairs, without
    gradient; clamped above 0 so identical rows give K ≡ len(multipliers)): DAN's multi-kernel with
    bandwidths that follow the batch's own spread, the kernels summed (weights β_u = 1)."""
    distances = squared_distances(rows)
    scale = distances.detach().mean().clamp_min(1e-12)
    return sum(torch.exp(-distances / (2 * multiplier * scale)) for multiplier in multipliers)


def gaussian_kernel(rows: torch.Tensor, sigma: float) -> torch.Tensor:
    """K = exp(−D / (2 σ²)) with a fixed bandwidth σ."""
    return torch.exp(-squared_distances(rows) / (2 * sigma ** 2))


def mmd_from_kernel(kernel: torch.Tensor, source_size: int, estimate: Estimate) -> torch.Tensor:
    """MMD² of the first `source_size` rows (source, n) against the rest (target, m) from their kernel matrix K.

    quadratic (the biased V-statistic, ‖μ_s − μ_t‖² in the kernel's Hilbert space, ≥ 0; n ≠ m allowed):
        MMD² = mean_ij K(s_i, s_j) + mean_ij K(t_i, t_j) − 2 mean_ij K(s_i, t_j)
    linear (DAN's linear-time unbiased estimate, over consecutive pairs i, i+1 mod n; needs n = m ≥ 2):
        MMD² = (1/n) Σ_i [K(s_i, s_i+1) + K(t_i, t_i+1) − K(s_i, t_i+1) − K(s_i+1, t_i)]
    Both are 0 when the two batches are the same rows in the same order.
    """
    ss = kernel[:source_size, :source_size]
    tt = kernel[source_size:, source_size:]
    st = kernel[:source_size, source_size:]
    if estimate == "quadratic":
        return ss.mean() + tt.mean() - 2 * st.mean()
    if len(tt) != source_size or source_size < 2:
        raise ValueError(f"the linear MMD estimate needs two batches of equal size ≥ 2, got {source_size} and {len(tt)}")
    index = torch.arange(source_size, device=kernel.device)
    following = (index + 1) % source_size
    return (ss[index, following] + tt[index, following] - st[index, following] - st[following, index]).mean()


class MultipleKernelMMDLoss(nn.Module):
    """DAN: the multi-kernel MMD of the bottleneck features,

        L_mmd = MMD²_k(f_s, f_t),  k = Σ_u exp(−‖x − y‖² / (2 σ_u²)),  σ_u² = 2^u · mean pairwise ‖x − y‖², u = −3..1

    (`multi_gaussian_kernel` on the stacked features, `mmd_from_kernel` with the `estimate`: linear,
    DAN's and Transfer-Learning-Library's default, or quadratic). 0 for identical batches; grows
    as the feature distributions move apart. It has no chance value. `forward(f_s, f_t, z_s, z_t)`
    returns (L_mmd, {}).
    """

    chance = None

    def __init__(self, estimate: Estimate = "linear"):
        super().__init__()
        self.estimate = estimate

    def forward(self, source_features: torch.Tensor, target_features: torch.Tensor,
                source_logits: torch.Tensor | None = None, target_logits: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict]:
        kernel = multi_gaussian_kernel(torch.cat([source_features, target_features]).float())
        return mmd_from_kernel(kernel, len(source_features), self.estimate), {}

    def extra_repr(self) -> str:
        return f"estimate={self.estimate}"


class JointMMDLoss(nn.Module):
    """JAN: the joint MMD of the features and the class predictions g = softmax(z), whose kernel is
    the product of a kernel per layer:

        k((f, g), (f', g')) = k_mk(f, f') · exp(−‖g − g'‖² / (2 σ_g²))
        L_jmmd = MMD²_k((f_s, g_s), (f_t, g_t))

    with k_mk DAN's multi-kernel on the features (see `MultipleKernelMMDLoss`) and a single Gaussian
    kernel of fixed bandwidth σ_g (`prediction_bandwidth`, 0.92 as in Transfer-Learning-Library) on
    the predictions; gradients flow into both. Estimate: quadratic (JAN's and TLlib's default) or
    linear (`mmd_from_kernel`). No chance value. `forward(f_s, f_t, z_s, z_t)` returns (L_jmmd, {}).
    """

    chance = None

    def __init__(self, estimate: Estimate = "quadratic", prediction_bandwidth: float = 0.92):
        super().__init__()
        self.estimate = estimate
        self.prediction_bandwidth = prediction_bandwidth

    def forward(self, source_features: torch.Tensor, target_features: torch.Tensor,
                source_logits: torch.Tensor, target_logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
        features = torch.cat([source_features, target_features]).float()
        predictions = F.softmax(torch.cat([source_logits, target_logits]).float(), dim=1)
        kernel = multi_gaussian_kernel(features) * gaussian_kernel(predictions, self.prediction_bandwidth)
        return mmd_from_kernel(kernel, len(source_features), self.estimate), {}

    def extra_repr(self) -> str:
        return f"estimate={self.estimate}, prediction_bandwidth={self.prediction_bandwidth}"
