"""Our validators against pytorch-adapt's on the same tensors (issue 27): BNM, ClassAMI, TargetKNN.

    PYTHONPATH=$PWD:/path/to/pytorch-adapt python benchmarks/validators_vs_pytorch_adapt.py

pytorch-adapt 0.0.83 wants pytorch-metric-learning 1.6.3 and torchmetrics 0.9.3 (and setuptools < 70 for
pkg_resources), e.g. `pip install --no-deps --target DIR pytorch-adapt==0.0.83 pytorch-metric-learning==1.6.3
torchmetrics==0.9.3 "setuptools<70"`. Without pytorch-adapt it says so and exits 0.

The tensors: N target and source images of C classes, features drawn around one centre per class (noise σ),
target logits that predict the true class of 80% of the images, so that every validator has something to
measure; several seeds and sizes. pytorch-adapt's ClassClusterValidator draws its k-means initialisation from
NumPy's global generator: seeding it with our `seed` gives the same draws as our random_state = seed.
pytorch-metric-learning computes in float32, we in float64: TargetKNN agrees to ~1e-7.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F

from da_toolkit.validators import (TARGET_KNN_K, batch_nuclear_norm, class_adjusted_mutual_information,
                                   target_knn_precision)


def tensors(seed: int, n: int, classes: int, dim: int, noise: float):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator)

    def domain(shift: float):
        labels = torch.randint(classes, (n,), generator=generator)
        features = centres[labels] + shift + noise * torch.randn(n, dim, generator=generator)
        return features, labels

    source_features, source_labels = domain(0.0)
    target_features, target_labels = domain(0.3)
    predicted = torch.where(torch.rand(n, generator=generator) < 0.8, target_labels,
                            torch.randint(classes, (n,), generator=generator))
    logits = 2 * torch.randn(n, classes, generator=generator) + 6 * F.one_hot(predicted, classes)
    return target_features, logits, source_features, source_labels


def main() -> int:
    try:
        from pytorch_adapt.validators import BNMValidator, ClassClusterValidator, TargetKNNValidator
        from pytorch_metric_learning.distances import LpDistance
        from pytorch_metric_learning.utils.inference import CustomKNN
    except ImportError as error:
        print(f"pytorch-adapt is not importable ({error}): nothing compared")
        return 0

    cases = [(seed, n, classes, dim, noise) for seed, (n, classes, dim, noise) in
             enumerate([(500, 10, 256, 1.0), (500, 10, 256, 3.0), (300, 31, 64, 0.5), (200, 5, 500, 8.0),
                        (500, 10, 84, 2.0), (64, 3, 16, 1.0)])]
    worst = {"bnm": 0.0, "class_ami": 0.0, "target_knn": 0.0}
    print(f"{'seed':>4} {'N':>4} {'C':>3} {'dim':>4} {'σ':>4} | {'bnm ours':>10} {'pytorch-adapt':>13} | "
          f"{'class_ami ours':>14} {'pytorch-adapt':>13} | {'target_knn ours':>15} {'pytorch-adapt':>13}")
    for seed, n, classes, dim, noise in cases:
        target_features, logits, source_features, source_labels = tensors(seed, n, classes, dim, noise)
        target_train = {"features": target_features, "logits": logits}
        src_train = {"features": source_features, "labels": source_labels}

        ours_bnm = batch_nuclear_norm(logits)
        theirs_bnm = BNMValidator()(target_train={"logits": logits})

        ours_ami = class_adjusted_mutual_information(target_features, logits, seed=seed)
        np.random.seed(seed)  # their KMeans(random_state=None) draws from NumPy's global generator
        theirs_ami = ClassClusterValidator(feat_normalizer=lambda x: F.normalize(x, dim=1))(target_train=target_train)

        k = min(TARGET_KNN_K, len(source_labels))
        ours_knn = target_knn_precision(target_features, logits, source_features, source_labels)
        theirs_knn = TargetKNNValidator(k=k, metric="mean_average_precision",
                                        knn_func=CustomKNN(LpDistance(normalize_embeddings=True, p=2)))(
            src_train=src_train, target_train=target_train)

        for name, ours, theirs in (("bnm", ours_bnm, theirs_bnm), ("class_ami", ours_ami, theirs_ami),
                                   ("target_knn", ours_knn, theirs_knn)):
            worst[name] = max(worst[name], abs(ours - float(theirs)))
        print(f"{seed:>4} {n:>4} {classes:>3} {dim:>4} {noise:>4} | {ours_bnm:>10.6f} {theirs_bnm:>13.6f} | "
              f"{ours_ami:>14.6f} {theirs_ami:>13.6f} | {ours_knn:>15.6f} {theirs_knn:>13.6f}")
    print("largest |ours − pytorch-adapt|: " + ", ".join(f"{name} {value:.2e}" for name, value in worst.items()))
    agree = worst["bnm"] < 1e-6 and worst["class_ami"] < 1e-9 and worst["target_knn"] < 1e-5
    print("equal" if agree else "DIFFERENT")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
