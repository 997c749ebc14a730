"""Test-set evaluation of a classifier (KTRDR-PIPELINE.md §10), in numpy: no scikit-learn needed."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import TrainingError
from .model import as_tensor


def predict_logits(
    model: nn.Module,
    X: np.ndarray | torch.Tensor,
    device: torch.device | str | None = None,
    batch_size: int = 65536,
) -> np.ndarray:
    """The model's logits for `X` as float32 numpy, in eval mode, in chunks that bound memory.

    With `device` the model is moved there; otherwise it runs where its parameters are.
    """
    if device is not None:
        model.to(device)
    device = next(model.parameters()).device
    model.eval()
    X = as_tensor(X, torch.float32)
    with torch.no_grad():
        chunks = [model(chunk.to(device)).float().cpu() for chunk in X.split(batch_size)]
    return torch.cat(chunks).numpy()


def evaluate_classification(
    model: nn.Module,
    X: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    num_classes: int,
    device: torch.device | str | None = None,
) -> dict:
    """§10's classification metrics on argmax predictions.

    `test_loss` is unweighted cross-entropy; precision/recall/f1 follow scikit-learn's
    `average="weighted"` with `zero_division=0` (per-class scores weighted by true support over the
    labels in y_true ∪ y_pred). `per_class` keys are the class indices as strings (JSON keys).
    """
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        raise TrainingError("there is no test data to evaluate: the test split is empty")
    if y.min() < 0 or y.max() >= num_classes:
        raise TrainingError(f"test labels must lie in [0, {num_classes}); found {y.min()}..{y.max()}")
    logits = predict_logits(model, X, device)
    if logits.shape[1] != num_classes:
        raise TrainingError(f"the model has {logits.shape[1]} outputs but {num_classes} classes were expected")
    predicted = logits.argmax(axis=1)
    test_loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y)).item()

    confusion = np.bincount(y * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, -1)
    true_positives = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    precision = _divide(true_positives, predicted_count)
    recall = _divide(true_positives, support)
    f1 = _divide(2 * true_positives, support + predicted_count)  # scikit-learn's tp-based form
    n = len(y)
    return {
        "test_accuracy": float(true_positives.sum() / n),
        "test_loss": test_loss,
        # Classes outside y_true ∪ y_pred have zero support, so weighting over all is the same.
        "precision": float(precision @ support / n),
        "recall": float(recall @ support / n),
        "f1_score": float(f1 @ support / n),
        "per_class": {
            str(c): {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                     "support": int(support[c])}
            for c in range(num_classes)
        },
        "confusion_matrix": confusion.tolist(),
        "majority_baseline_accuracy": float(support.max() / n),
        "n_samples": n,
    }


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    safe = np.where(denominator > 0, denominator, 1)
    return np.where(denominator > 0, numerator / safe, 0.0)
