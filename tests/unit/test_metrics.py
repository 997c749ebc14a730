"""§10 test metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers.floats import assert_float32_close
from trainhost.jobs.pipeline.errors import TrainingError
from trainhost.jobs.pipeline.metrics import evaluate_classification, predict_logits


def identity_model(num_classes: int = 3) -> nn.Module:
    """Logits = inputs, so X = 5·one_hot(pred) makes the model predict `pred`."""
    model = nn.Linear(num_classes, num_classes)
    with torch.no_grad():
        model.weight.copy_(torch.eye(num_classes))
        model.bias.zero_()
    return model


def inputs_for(predictions: list[int], num_classes: int = 3) -> np.ndarray:
    return 5 * np.eye(num_classes, dtype=np.float32)[predictions]


def test_weighted_metrics_match_hand_computation():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    m = evaluate_classification(identity_model(), inputs_for(y_pred), np.array(y_true), 3)

    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["test_accuracy"] == pytest.approx(4 / 6)
    # Per class: precision tp/pred = [1, 1/2, 1/2], recall tp/support = [2/3, 1/2, 1],
    # f1 = 2tp/(support+pred) = [4/5, 1/2, 2/3]; weights are the supports [3, 2, 1].
    assert m["precision"] == pytest.approx((3 * 1 + 2 * 0.5 + 1 * 0.5) / 6)
    assert m["recall"] == pytest.approx((3 * 2 / 3 + 2 * 0.5 + 1 * 1) / 6)
    assert m["f1_score"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert m["per_class"]["0"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m["per_class"]["2"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert m["majority_baseline_accuracy"] == pytest.approx(0.5)
    assert m["n_samples"] == 6
    # Unweighted cross-entropy: 4 right (logit 5 on the true class), 2 wrong (logit 0 on it).
    right, wrong = math.log(1 + 2 * math.exp(-5)), math.log(math.exp(5) + 2)
    assert m["test_loss"] == pytest.approx((4 * right + 2 * wrong) / 6, rel=1e-6)


def test_zero_division_gives_zero_and_absent_labels_do_not_count():
    # Class 0 is never predicted (precision 0/0 -> 0); class 2 is in neither y_true nor y_pred.
    m = evaluate_classification(identity_model(), inputs_for([1, 1, 1]), np.array([0, 1, 1]), 3)
    assert m["per_class"]["0"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_class"]["2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["precision"] == pytest.approx((1 * 0 + 2 * 2 / 3) / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1_score"] == pytest.approx((1 * 0 + 2 * 0.8) / 3)
    assert m["majority_baseline_accuracy"] == pytest.approx(2 / 3)


def test_predict_logits_in_chunks_equals_one_pass():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    X = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    chunked = predict_logits(model, X, "cpu", batch_size=3)
    assert chunked.dtype == np.float32 and chunked.shape == (10, 3)
    assert_float32_close(chunked, predict_logits(model, X, "cpu"))  # eval: no dropout
    assert not model.training


def test_refuses_empty_and_out_of_range_labels():
    with pytest.raises(TrainingError, match="no test data"):
        evaluate_classification(identity_model(), np.zeros((0, 3), np.float32), np.zeros(0, np.int64), 3)
    with pytest.raises(TrainingError, match="labels must lie"):
        evaluate_classification(identity_model(), inputs_for([0]), np.array([3]), 3)
