"""Target-domain evaluation: accuracy, per-class accuracy and the confusion matrix; the collapse alarm."""
from __future__ import annotations

import math

import torch
from sklearn.metrics import confusion_matrix
from torch import nn

from da_toolkit.data import DomainDataset
from da_toolkit.data.base import to_float


@torch.no_grad()
def _outputs(model: nn.Module, dataset: DomainDataset, device: torch.device | str, batch_size: int,
             head) -> torch.Tensor:
    """head(logits) of every image, in dataset order, with the model in eval mode."""
    was_training = model.training
    model.eval()
    outputs = [head(model(to_float(chunk.to(device)))).cpu() for chunk in dataset.images.split(batch_size)]
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0)


def predict(model: nn.Module, dataset: DomainDataset, device: torch.device | str = "cpu",
            batch_size: int = 500) -> torch.Tensor:
    """Predicted class of every image, in dataset order, with the model in eval mode."""
    return _outputs(model, dataset, device, batch_size, lambda logits: logits.argmax(1)).to(torch.int64)


def evaluate(model: nn.Module, dataset: DomainDataset, device: torch.device | str = "cpu",
             batch_size: int = 500) -> dict:
    """{"accuracy", "per_class_accuracy", "confusion_matrix", "images"} of `model` on a labeled dataset.

    accuracy = mean(pred == label); per-class accuracy = diagonal / row sums of the confusion
    matrix (rows: true class, columns: predicted class); a class with no images gets None.
    """
    predictions = predict(model, dataset, device, batch_size)
    classes = list(range(dataset.num_classes))
    matrix = confusion_matrix(dataset.labels.numpy(), predictions.numpy(), labels=classes)
    totals = matrix.sum(axis=1)
    per_class = [round(float(matrix[c, c] / totals[c]), 4) if totals[c] else None for c in classes]
    accuracy = float((predictions == dataset.labels).float().mean()) if len(dataset) else 0.0
    return {"accuracy": round(accuracy, 4), "per_class_accuracy": per_class,
            "confusion_matrix": matrix.tolist(), "images": len(dataset)}


# The collapse alarm rings when, on a target split, the most predicted class takes more than
# halfway from the largest class share of the source labels to 100%: threshold = (1 + s) / 2,
# s = largest class count / labeled source images. With 10 balanced classes that is 55%, with 2
# balanced classes 75%; a source where one class is common does not raise the alarm by itself.


def prediction_statistics(model: nn.Module, dataset: DomainDataset, device: torch.device | str = "cpu",
                          batch_size: int = 500) -> dict:
    """What the model predicts on `dataset`, using no labels.

    histogram[c] = number of images predicted as class c; top_share = max(histogram) / N;
    mean_prediction_entropy = H(p̄) / log C with p̄ = mean over images of softmax(logits), the
    entropy of the mean prediction normalised to [0, 1] (1: the classes are used evenly on
    average, 0: every image is put in one class with certainty).
    """
    probabilities = _outputs(model, dataset, device, batch_size, lambda logits: logits.float().softmax(1))
    classes = dataset.num_classes
    histogram = torch.bincount(probabilities.argmax(1), minlength=classes) if len(dataset) else torch.zeros(
        classes, dtype=torch.int64)
    mean = probabilities.mean(0) if len(dataset) else torch.full((classes,), 1 / classes)
    entropy = float(-(mean * mean.clamp_min(1e-12).log()).sum()) / math.log(classes)
    return {"dataset": dataset.name, "images": len(dataset), "histogram": histogram.tolist(),
            "top_class": int(histogram.argmax()), "top_share": round(float(histogram.max()) / max(len(dataset), 1), 4),
            "mean_prediction_entropy": round(entropy, 4)}


def collapse_check(model: nn.Module, target: DomainDataset, target_test: DomainDataset, source_labels: torch.Tensor,
                   device: torch.device | str = "cpu", batch_size: int = 500) -> dict:
    """The collapse alarm: prediction statistics on the target training and test split, the threshold
    and whether it was crossed. No target label is read; the source labels set the bar (see above)."""
    labeled = source_labels[source_labels >= 0]
    source_top = float(torch.bincount(labeled, minlength=target.num_classes).max()) / max(len(labeled), 1)
    threshold = round((1 + source_top) / 2, 4)
    splits = {"target_train": prediction_statistics(model, target, device, batch_size),
              "target_test": prediction_statistics(model, target_test, device, batch_size)}
    crossed = [name for name, stats in splits.items() if stats["top_share"] > threshold]
    return {**splits, "threshold_top_share": threshold, "collapsed": bool(crossed),
            "message": collapse_message(splits, threshold) if crossed else None}


def collapse_message(splits: dict, threshold: float) -> str:
    name, stats = max(splits.items(), key=lambda item: item[1]["top_share"])
    return (f"the classifier collapsed: it puts {100 * stats['top_share']:.1f}% of the {name.replace('_', ' ')} "
            f"images in class {stats['top_class']} (alarm above {100 * threshold:.0f}%; entropy of the mean "
            f"prediction {stats['mean_prediction_entropy']:.2f} of 1): treat this run as failed, not as the method's result")
