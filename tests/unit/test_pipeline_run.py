"""The pipeline end to end in-process: fixtures as the backend sends them, on the real sample data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from jobs.pipeline.artifacts import load_model
from jobs.pipeline.errors import DataError
from jobs.pipeline.features import build_features
from jobs.pipeline.run import evaluate_saved_model, prepare_dataset, train_strategy
from jobs.pipeline.strategy import parse_strategy
from tests.conftest import REFERENCE, REPO, strategy_text

SINGLE_TIMEFRAME_ZIGZAG = ["v3_minimal", "v3_single_indicator", "v3_multi_indicator",
                           "v3_multi_output_indicator", "v3_e2e_test"]
DATES = {"start_date": "2017-05-01", "end_date": "2018-02-07"}


@pytest.mark.parametrize("name", SINGLE_TIMEFRAME_ZIGZAG)
def test_fixture_trains_end_to_end_and_the_model_loads(name, sample_data_dir, tmp_path):
    strategy = parse_strategy(strategy_text(name), {**DATES, "epochs": 2})
    result = train_strategy(strategy, sample_data_dir, tmp_path)
    assert result["training_metrics"]["epochs_trained"] == 2
    assert 0 <= result["test_metrics"]["test_accuracy"] <= 1
    predictor = load_model(result["model_path"])
    assert predictor.feature_names == [f.feature_id for f in strategy.features]
    dataset = prepare_dataset(strategy, sample_data_dir)
    x_test = dataset.test.features.to_numpy(dtype=np.float32)
    accuracy = float((predictor.predict(x_test) == dataset.test.labels).mean())
    assert accuracy == pytest.approx(result["test_metrics"]["test_accuracy"], abs=1e-9)


@pytest.mark.parametrize("name", SINGLE_TIMEFRAME_ZIGZAG)
def test_feature_matrix_matches_ktrdr_after_warm_up(name):
    """KTRDR's features.csv (NaN set to 0) on all 5,000 bars, compared where our row is complete."""
    reference = REFERENCE / name
    ohlcv = pd.read_csv(reference / "indicators.csv", index_col=0, parse_dates=True)[
        ["open", "high", "low", "close", "volume"]]
    expected = pd.read_csv(reference / "features.csv", index_col=0, parse_dates=True)
    strategy = parse_strategy(strategy_text(name))
    ours = build_features(strategy, ohlcv, strategy.base_timeframe)
    complete = ~ours.isna().any(axis=1)
    assert complete.sum() > 4900
    assert set(ours.columns) == set(expected.columns)
    for column in ours.columns:
        np.testing.assert_allclose(ours.loc[complete, column], expected.loc[complete, column],
                                   rtol=1e-7, atol=1e-7, err_msg=column)


def test_evaluation_recomputes_features_on_a_new_range(sample_data_dir, tmp_path):
    strategy = parse_strategy(strategy_text("v3_multi_indicator"),
                              {"start_date": "2017-05-01", "end_date": "2017-12-31", "epochs": 1})
    trained = train_strategy(strategy, sample_data_dir, tmp_path)
    from jobs.pipeline.strategy import parse_when

    evaluated = evaluate_saved_model(tmp_path, trained["model_path"], sample_data_dir,
                                     start=parse_when("2018-01-01"), end=parse_when("2018-02-07"))
    metrics = evaluated["metrics"]
    assert metrics["n_samples"] == evaluated["data"]["usable_bars"] > 500
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["n_samples"]


def test_too_little_data_is_a_clear_error(sample_data_dir, tmp_path):
    strategy = parse_strategy(strategy_text("v3_multi_indicator"),
                              {"start_date": "2017-05-01", "end_date": "2017-05-02"})
    with pytest.raises(DataError, match="bars"):
        train_strategy(strategy, sample_data_dir, tmp_path)


def test_in_process_command_prints_metrics_and_artifact_path(sample_data_dir, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "jobs.pipeline", str(REPO / "examples/strategies/v3_multi_indicator.yaml"),
         "--data-dir", str(sample_data_dir), "--models-dir", str(tmp_path), "--start", "2017-05-01",
         "--end", "2018-02-07", "--epochs", "2"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "majority-class baseline" in done.stdout
    assert str(tmp_path) in done.stdout


def test_producer_side_imports_no_torch_or_pandas():
    code = ("import sys, jobs.producer, jobs.schemas, jobs.pipeline.strategy; "
            "print(sorted(m for m in ('torch', 'pandas', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.stdout.strip() == "[]", done.stderr
