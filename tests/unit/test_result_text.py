"""The result as a terminal prints it (jobs/pipeline/result_text.py): the backtest's metrics beside
buy-and-hold's in aligned columns, from a real backtest of seeded bars and model outputs."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from trainhost.jobs.pipeline.backtest_settings import BacktestConfig
from trainhost.jobs.pipeline.metric_labels import BACKTEST_METRICS, format_metric
from trainhost.jobs.pipeline.model_backtest import backtest_outputs
from trainhost.jobs.pipeline.result_text import backtest_lines, result_text

CLASSIFICATION = {"test_accuracy": 0.52, "test_loss": 1.0312, "f1_score": 0.48, "majority_baseline_accuracy": 0.41,
                  "confusion_matrix": [[5, 3, 2], [1, 9, 1], [2, 2, 6]], "n_samples": 31}


@pytest.fixture(scope="module")
def backtest() -> dict:
    """A backtest of 600 seeded hourly bars whose first 20 have no model outputs (the warm-up)."""
    rng = np.random.default_rng(7)
    index = pd.date_range("2018-01-01", periods=600, freq="h", tz="UTC")
    close = 1.2 * np.exp(np.cumsum(rng.normal(0, 0.002, len(index))))
    open_ = np.concatenate([[1.2], close[:-1]])
    bars = pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.001,
                         "low": np.minimum(open_, close) * 0.999, "close": close, "volume": 1.0}, index=index)
    outputs = rng.normal(0, 2, (len(bars), 3))
    outputs[:20] = np.nan
    return backtest_outputs(bars, outputs, "classification", BacktestConfig(), first=index[5]).summary


def table_rows(lines: list[str]) -> dict[str, list[str]]:
    """label -> [strategy, buy & hold], read back from the columns (separated by two spaces or more)."""
    start = next(i for i, line in enumerate(lines) if re.fullmatch(r"\s+strategy\s+buy & hold", line))
    rows = lines[start + 1:start + 1 + len(BACKTEST_METRICS)]
    return {label: values for label, *values in (re.split(r"\s{2,}", row.strip()) for row in rows)}


def test_the_backtest_table_shows_every_metric_beside_buy_and_hold_aligned(backtest):
    assert backtest["metrics"]["trade_count"] > 0 and backtest["baseline"]["trade_count"] == 1
    lines = backtest_lines(backtest)
    rows = table_rows(lines)
    assert list(rows) == [m.label for m in BACKTEST_METRICS]
    for metric in BACKTEST_METRICS:
        assert rows[metric.label] == [format_metric(backtest["metrics"][metric.key], metric.unit),
                                      format_metric(backtest["baseline"][metric.key], metric.unit)], metric.key
    table = lines[1:2 + len(BACKTEST_METRICS)]
    assert len({len(line) for line in table}) == 1  # right-aligned columns end together
    assert rows["Sharpe"][0] == f"{backtest['metrics']['sharpe']:.3f}"
    assert rows["trades"] == [str(backtest["metrics"]["trade_count"]), "1"]
    assert rows["drawdown peak"][0].startswith("2018-01-")


def test_the_span_and_the_warnings_come_with_the_table(backtest):
    lines = backtest_lines(backtest)
    assert lines[0] == "backtest:  580 bars 2018-01-01 20:00 .. 2018-01-25 23:00, initial capital 100,000.00"
    assert backtest["warnings"] and lines[-len(backtest["warnings"]):] == [
        f"warning:   {w}" for w in backtest["warnings"]]
    assert "have no complete model inputs" in lines[-len(backtest["warnings"])]


def test_an_evaluation_result_prints_model_data_test_metrics_and_backtest(backtest):
    text = result_text({"model_path": "/models/s/1h_v1", "task": "classification",
                        "labels": {"mapping": {"0": "BUY", "1": "HOLD", "2": "SELL"}},
                        "data": {"bars": 600, "usable_bars": 31, "first_bar": "2018-01-01T05:00:00+00:00",
                                 "last_bar": "2018-01-25T23:00:00+00:00"},
                        "metrics": CLASSIFICATION, "backtest": backtest})
    lines = text.splitlines()
    assert lines[:4] == [
        "model:     /models/s/1h_v1",
        "data:      600 bars 2018-01-01 05:00 .. 2018-01-25 23:00, 31 with labels",
        "test:      accuracy 0.520 (majority-class baseline 0.410), loss 1.0312, weighted F1 0.480, 31 samples",
        "confusion matrix (rows true BUY/HOLD/SELL): [[5, 3, 2], [1, 9, 1], [2, 2, 6]]",
    ]
    assert lines[4:] == backtest_lines(backtest)


def test_a_model_that_is_not_backtested_says_why_once():
    reason = "not backtested: a regime model predicts market states, not trade signals"
    lines = backtest_lines({"config": {}, "metrics": None, "baseline": None, "skipped": reason, "warnings": [reason]})
    assert lines == [f"backtest:  {reason}"]


def test_a_regression_result_prints_its_baselines():
    test = {"test_accuracy": 0.55, "majority_baseline_accuracy": 0.51, "test_loss": 0.00012,
            "zero_baseline_loss": 0.0002, "mae": 0.004, "zero_baseline_mae": 0.005, "n_samples": 1200}
    assert result_text({"task": "regression", "test_metrics": test}) == (
        "test:      sign accuracy 0.550 (majority sign 0.510), Huber(δ=1) loss 0.00012 (predict zero 0.0002), "
        "MAE 0.004 (predict zero 0.005), 1,200 samples")
