"""Target-domain evaluation: accuracy, per-class accuracy and the confusion matrix; the collapse alarm."""
from __future__ import annotations

import math

import torch
from sklearn.metrics import confusion_matrix
from torch import nn

from da_toolkit.data import Domain
from da_toolkit.data.base import device_batches


@torch.no_grad()
def _outputs(model: nn.Module, dataset: Domain, device: torch.device | str, batch_size: int,
             head) -> torch.Tensor:
    """head(logits) of every image, in dataset order, with the model in eval mode."""
    was_training = model.training
    model.eval()
    outputs = [head(model(images)).cpu() for images in device_batches(dataset, device, batch_size)]
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0)


def predict(model: nn.Module, dataset: Domain, device: torch.device | str = "cpu",
            batch_size: int = 500) -> torch.Tensor:
    """Predicted class of every image, in dataset order, with the model in eval mode."""
    return _outputs(model, dataset, device, batch_size, lambda logits: logits.argmax(1)).to(torch.int64)


def evaluate(model: nn.Module, dataset: Domain, device: torch.device | str = "cpu",
             batch_size: int = 500) -> dict:
    """{"accuracy", "per_class_accuracy", "confusion_matrix", "class_names", "images"} of `model` on a labeled
    dataset (per-class figures in the order of `class_names`).

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
            "confusion_matrix": matrix.tolist(), "class_names": list(dataset.class_names), "images": len(dataset)}


# The collapse alarm rings when, on a target split (training or test images; no label is read),
#  * the most predicted class takes more than halfway from the largest class share of the source
#    labels to 100%: top_share > (1 + s) / 2 (10 balanced source classes: 55%), or
#  * the predictions use fewer than half as many classes as the source labels do, counted as
#    effective classes exp(H(histogram / N)) (10 balanced source classes: fewer than 5, e.g. a
#    third of the images in each of three classes).
# A run whose logits are nearly constant (a diverged adversarial game) has a mean prediction of
# entropy near 1 and yet puts its images in two or three classes: the histogram decides.
# It also rings when the accuracy on the labeled source test images is below twice chance (2 / C),
# or, for two classes (where twice chance is 100%), below halfway from chance to 100%: the bar is
# min(2 / C, (1 + 1 / C) / 2). A classifier that has not learned its own labeled domain is broken
# whatever it predicts.


def _effective_classes(counts: torch.Tensor) -> float:
    """exp(entropy) of a histogram: k for k equally filled classes, 1 for one."""
    shares = counts.double() / max(int(counts.sum()), 1)
    return math.exp(float(-(shares * shares.clamp_min(1e-300).log()).sum()))


def prediction_statistics(model: nn.Module, dataset: Domain, device: torch.device | str = "cpu",
                          batch_size: int = 500) -> dict:
    """What the model predicts on `dataset`, using no labels.

    histogram[c] = number of images predicted as class c; top_share = max(histogram) / N;
    effective_classes = exp(H(histogram / N)); mean_prediction_entropy = H(p̄) / log C with
    p̄ = mean over images of softmax(logits), the entropy of the mean prediction normalised to
    [0, 1] (1: the classes are used evenly on average, 0: every image put in one class with certainty).
    """
    probabilities = _outputs(model, dataset, device, batch_size, lambda logits: logits.float().softmax(1))
    classes = dataset.num_classes
    histogram = torch.bincount(probabilities.argmax(1), minlength=classes) if len(dataset) else torch.zeros(
        classes, dtype=torch.int64)
    mean = probabilities.mean(0) if len(dataset) else torch.full((classes,), 1 / classes)
    entropy = float(-(mean * mean.clamp_min(1e-12).log()).sum()) / math.log(classes)
    return {"dataset": dataset.name, "images": len(dataset), "histogram": histogram.tolist(),
            "top_class": int(histogram.argmax()), "top_share": round(float(histogram.max()) / max(len(dataset), 1), 4),
            "effective_classes": round(_effective_classes(histogram), 2),
            "mean_prediction_entropy": round(entropy, 4)}


def collapse_check(model: nn.Module, target: Domain, target_test: Domain, source_labels: torch.Tensor | None,
                   source_accuracy: float | None, device: torch.device | str = "cpu", batch_size: int = 500) -> dict:
    """The collapse alarm: prediction statistics on the target training and test split, the thresholds
    and whether one was crossed. No target label is read; the source labels and the source test
    accuracy set the bars (see above). A source-free run (both None) is judged against balanced
    source classes, and without the source accuracy bar."""
    source = (torch.bincount(source_labels[source_labels >= 0], minlength=target.num_classes)
              if source_labels is not None else torch.ones(target.num_classes, dtype=torch.int64))
    top_bar = round((1 + float(source.max()) / max(int(source.sum()), 1)) / 2, 4)
    classes_bar = round(_effective_classes(source) / 2, 2)
    splits = {"target_train": prediction_statistics(model, target, device, batch_size),
              "target_test": prediction_statistics(model, target_test, device, batch_size)}
    crossed = [name for name, stats in splits.items()
               if stats["top_share"] > top_bar or stats["effective_classes"] < classes_bar]
    twice_chance, halfway = 2 / target.num_classes, (1 + 1 / target.num_classes) / 2
    bar, bar_name = ((twice_chance, "twice chance") if twice_chance <= halfway
                     else (halfway, "halfway from chance to 100%"))
    source_bar = round(bar, 4)
    reasons = [f"on the {name.replace('_', ' ')} images it predicts class {splits[name]['top_class']} for "
               f"{100 * splits[name]['top_share']:.1f}% and uses {splits[name]['effective_classes']:.1f} effective "
               f"classes (alarm: one class above {100 * top_bar:.0f}% or fewer than {classes_bar:.1f} classes)"
               for name in crossed[:1]]
    if source_accuracy is not None and source_accuracy < source_bar:
        reasons.append(f"its accuracy on the labeled source test images is {100 * source_accuracy:.1f}%, below "
                       f"{bar_name} ({100 * source_bar:.0f}%)")
    message = (f"the classifier collapsed: {'; '.join(reasons)}; treat this run as failed, not as the method's "
               f"result") if reasons else None
    return {**splits, "threshold_top_share": top_bar, "threshold_effective_classes": classes_bar,
            "threshold_source_accuracy": source_bar, "collapsed": message is not None, "message": message}
