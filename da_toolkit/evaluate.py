"""Target-domain evaluation: accuracy, per-class accuracy and the confusion matrix."""
from __future__ import annotations

import torch
from sklearn.metrics import confusion_matrix
from torch import nn

from da_toolkit.data import DomainDataset
from da_toolkit.data.base import to_float


@torch.no_grad()
def predict(model: nn.Module, dataset: DomainDataset, device: torch.device | str = "cpu",
            batch_size: int = 500) -> torch.Tensor:
    """Predicted class of every image, in dataset order, with the model in eval mode."""
    was_training = model.training
    model.eval()
    predictions = []
    for chunk in dataset.images.split(batch_size):
        predictions.append(model(to_float(chunk.to(device))).argmax(1).cpu())
    model.train(was_training)
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.int64)


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
