"""Every judged model gets a backtest: the test split after training, the range of an evaluation, with
the features warmed up on the data before the range (jobs/pipeline/model_backtest.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.fixtures import strategy_text
from trainhost.jobs.pipeline.artifacts import load_model
from trainhost.jobs.pipeline.data import load_timeframes
from trainhost.jobs.pipeline.features import build_feature_matrix
from trainhost.jobs.pipeline.model_backtest import model_outputs
from trainhost.jobs.pipeline.session import evaluate_saved_model, train_strategy
from trainhost.jobs.pipeline.strategy import Strategy, parse_end, parse_strategy, parse_when

TRAIN = {"start_date": "2017-05-01", "end_date": "2017-12-31", "epochs": 2}


@pytest.fixture(scope="module")
def trained(sample_data_dir, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    strategy = parse_strategy(strategy_text("v3_multi_indicator"), TRAIN)
    return models, train_strategy(strategy, sample_data_dir, models, session_id="s1",
                                  backtest={"allow_short_from_flat": True})


def rows(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_a_training_result_has_an_out_of_sample_backtest_with_its_files(trained):
    _, result = trained
    backtest = result["backtest"]
    assert backtest["first_bar"] >= result["data"]["test_range"][0]
    assert backtest["config"]["allow_short_from_flat"] is True and backtest["config"]["confidence_threshold"] == 0.6
    folder = Path(result["model_path"]) / backtest["folder"]
    assert backtest["folder"] == "evaluations/s1"
    trades, equity = rows(folder / "trades.csv"), rows(folder / "equity.csv")
    assert len(trades) == backtest["metrics"]["trade_count"] and len(equity) == backtest["bars"]
    net = sum(float(t["net_pnl"]) for t in trades)
    assert net == pytest.approx(backtest["metrics"]["total_return"], rel=1e-6, abs=1e-6)
    assert float(equity[-1]["buy_and_hold"]) == pytest.approx(
        backtest["config"]["initial_capital"] + backtest["baseline"]["total_return"], rel=1e-9)
    assert json.loads((folder / "backtest.json").read_text())["metrics"] == backtest["metrics"]


def test_an_evaluation_starts_warm_at_its_first_bar_and_its_end_date_is_inclusive(trained, sample_data_dir):
    models, result = trained
    evaluated = evaluate_saved_model(models, result["model_path"], sample_data_dir, start=parse_when("2018-01-02"),
                                     end=parse_end("2018-01-31"), session_id="e1")
    backtest = evaluated["backtest"]
    assert backtest["first_bar"].startswith("2018-01-02T00:00") and backtest["last_bar"].startswith("2018-01-31T23")
    assert backtest["warnings"] == []
    assert evaluated["data"]["first_bar"] == backtest["first_bar"]


def test_a_range_at_the_start_of_the_data_says_it_has_no_history(trained, sample_data_dir):
    models, result = trained
    evaluated = evaluate_saved_model(models, result["model_path"], sample_data_dir, end=parse_end("2017-06-30"),
                                     session_id="e2")
    warnings = " ".join(evaluated["backtest"]["warnings"])
    assert "asks for 200 of history" in warnings and "are not simulated" in warnings


def test_model_outputs_of_a_sub_range_equal_the_same_bars_of_a_longer_one(trained, sample_data_dir):
    _, result = trained
    predictor = load_model(result["model_path"])
    strategy = Strategy.from_dict(predictor.metadata["strategy"])

    def outputs(start: str):
        frames, _ = load_timeframes(sample_data_dir, "EURUSD", ["1h"], "1h", start, "2018-02-07")
        matrix = build_feature_matrix(strategy, frames)
        return matrix.index, model_outputs(predictor.model, matrix, predictor.metadata["normalization"])

    long_index, long_outputs = outputs("2017-06-01")
    short_index, short_outputs = outputs("2017-10-01")
    warm = short_index >= short_index[0] + np.timedelta64(30, "D")  # past the indicators' recursion memory
    np.testing.assert_allclose(short_outputs[warm], long_outputs[np.isin(long_index, short_index[warm])],
                               rtol=0, atol=1e-5)


def test_a_regime_model_is_not_backtested_and_says_why(sample_data_dir, tmp_path):
    strategy = parse_strategy(strategy_text("regime_classifier_seed_v1"), TRAIN)
    result = train_strategy(strategy, sample_data_dir, tmp_path, session_id="r1")
    assert result["backtest"]["metrics"] is None and "market states" in result["backtest"]["skipped"]
    assert result["test_metrics"]["test_accuracy"] is not None
    assert not (Path(result["model_path"]) / "evaluations").exists()


def test_a_regression_model_backtests_by_its_edge_threshold(sample_data_dir, tmp_path):
    strategy = parse_strategy(strategy_text("regression_example_v3"), TRAIN)
    result = train_strategy(strategy, sample_data_dir, tmp_path, session_id="g1")
    backtest = result["backtest"]
    assert backtest["metrics"]["bars"] == backtest["bars"] > 0
    assert backtest["config"]["round_trip_cost"] == strategy.decisions.round_trip_cost


def test_windows_that_reach_an_incomplete_row_have_no_output():
    import pandas as pd
    import torch

    class WindowSum(torch.nn.Module):  # (n, L, f) -> the window's sum, as a 1-output model
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            return self.scale * x.sum(dim=(1, 2))[:, None]

    features = pd.DataFrame({"a": [np.nan, 1, 2, 3, np.nan, 5, 6, 7]})
    out = model_outputs(WindowSum(), features, {}, sequence_length=2)
    expected = [np.nan, np.nan, 3, 5, np.nan, np.nan, 11, 13]
    np.testing.assert_array_equal(out[:, 0], expected)
