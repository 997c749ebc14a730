"""Test-set evaluation (docs/ktrdr-semantics.md §10), in numpy: no scikit-learn needed.

Classification: accuracy, unweighted cross-entropy, support-weighted precision/recall/F1, the
confusion matrix and the majority-class baseline. Regression: sign agreement, Huber loss with
δ = 1 (KTRDR's test loss, not the training `huber_delta`), MAE, plus the "predict zero" baseline
for each and the majority-sign baseline beside the accuracy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainhost.jobs.pipeline.errors import TrainingError
from trainhost.jobs.pipeline.model import as_tensor


def forward_in_chunks(model: nn.Module, X: torch.Tensor, windows: torch.Tensor | None = None,
                      chunk: int | None = None) -> torch.Tensor:
    """The model's outputs for every row of X, or for every window (the rows X[windows[i]]), on the
    model's device, `chunk` samples at a time (None: all at once): the chunk bounds the memory a pass
    takes (for windows, the gathered (chunk, L, features) copy). Rows move to the device a chunk at a
    time, so X may stay on the host; windows gather from X on the device."""
    device = next(model.parameters()).device
    if windows is None:
        parts = X.split(chunk) if chunk else (X,)
        return torch.cat([model(part.to(device)) for part in parts])
    X, windows = X.to(device), windows.to(device)
    parts = windows.split(chunk) if chunk else (windows,)
    return torch.cat([model(X[part]) for part in parts])


def predict_logits(
    model: nn.Module,
    X: np.ndarray | torch.Tensor,
    device: torch.device | str | None = None,
    batch_size: int = 65536,
    windows: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """The model's outputs for `X` as float32 numpy, in eval mode, `batch_size` rows a pass.

    With `windows` (n, L) the outputs are for the sequences X[windows[i]] (sequence models), as many
    windows a pass as hold `batch_size` rows; X may also already be windows (n, L, features). With
    `device` the model is moved there; otherwise it runs where its parameters are.
    """
    if device is not None:
        model.to(device)
    model.eval()
    X = as_tensor(X, torch.float32)
    if windows is not None:
        windows = as_tensor(windows, torch.int64)
    chunk = batch_size if windows is None else max(1, batch_size // windows.shape[1])
    with torch.no_grad():
        return forward_in_chunks(model, X, windows, chunk).float().cpu().numpy()


def evaluate_classification(
    model: nn.Module,
    X: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    num_classes: int,
    device: torch.device | str | None = None,
    windows: np.ndarray | torch.Tensor | None = None,
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
    logits = predict_logits(model, X, device, windows=windows)
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


def evaluate_regression(
    model: nn.Module,
    X: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    device: torch.device | str | None = None,
    windows: np.ndarray | torch.Tensor | None = None,
) -> dict:
    """§10's regression metrics, with the "predict zero" baseline beside each.

    `test_accuracy` = mean(sign(pred) == sign(y)) with sign(0) = 0 (so predicting zero scores only
    where y is exactly 0); `test_loss` = Huber with δ = 1.0 as KTRDR reports it; `mae`.
    `majority_baseline_accuracy` is the best constant sign (the share of the commoner sign of y).
    """
    y = np.asarray(y, dtype=np.float64)
    if len(y) == 0:
        raise TrainingError("there is no test data to evaluate: the test split is empty")
    outputs = predict_logits(model, X, device, windows=windows)
    if outputs.ndim != 2 or outputs.shape[1] != 1:
        raise TrainingError(f"a regression model has 1 output, this one has {outputs.shape[-1]}")
    pred = outputs[:, 0].astype(np.float64)
    zero = np.zeros_like(y)
    signs = np.sign(y)
    correlation = float(np.corrcoef(pred, y)[0, 1]) if np.std(pred) > 0 and np.std(y) > 0 else 0.0
    return {
        "test_accuracy": float((np.sign(pred) == signs).mean()),
        "test_loss": _huber(pred, y, 1.0),
        "mae": float(np.abs(pred - y).mean()),
        "mse": float(((pred - y) ** 2).mean()),
        "correlation": correlation,
        "zero_baseline_accuracy": float((signs == 0).mean()),
        "zero_baseline_loss": _huber(zero, y, 1.0),
        "zero_baseline_mae": float(np.abs(y).mean()),
        "majority_baseline_accuracy": float(max((signs > 0).mean(), (signs < 0).mean(), (signs == 0).mean())),
        "prediction_mean": float(pred.mean()),
        "prediction_std": float(pred.std()),
        "n_samples": len(y),
    }


def _huber(pred: np.ndarray, y: np.ndarray, delta: float) -> float:
    error = np.abs(pred - y)
    return float(np.where(error <= delta, 0.5 * error**2, delta * (error - 0.5 * delta)).mean())
