"""The pipeline end to end in-process: fixtures as the backend sends them, on the real sample data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.helpers.fixtures import REFERENCE_NAMES, REPO, reference_frame, strategy_text
from tests.helpers.processes import heavy_imports
from tests.helpers.synthetic import write_bars
from trainhost.jobs.pipeline.artifacts import load_model
from trainhost.jobs.pipeline.data import load_ohlcv
from trainhost.jobs.pipeline.dataset import prepare_dataset, take_rows, usable_rows
from trainhost.jobs.pipeline.errors import DataError, StrategyError
from trainhost.jobs.pipeline.features import apply_normalization, build_features
from trainhost.jobs.pipeline.labels import zigzag_labels
from trainhost.jobs.pipeline.session import evaluate_saved_model, train_strategy
from trainhost.jobs.pipeline.strategy import parse_strategy, parse_when

SINGLE_TIMEFRAME_ZIGZAG = ["v3_minimal", "v3_single_indicator", "v3_multi_indicator",
                           "v3_multi_output_indicator", "v3_e2e_test"]
OTHER_1H = ["regression_example_v3", "trend_tb_signal_v1", "regime_classifier_seed_v1"]
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


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_feature_matrix_matches_ktrdr_after_warm_up(name):
    """KTRDR's features.csv (NaN set to 0) on all 5,000 bars, compared where our row is complete
    (every reference fixture: the regime, regression and triple-barrier ones too)."""
    ohlcv = reference_frame(name, "indicators", parse_dates=True)[["open", "high", "low", "close", "volume"]]
    expected = reference_frame(name, "features", parse_dates=True)
    strategy = parse_strategy(strategy_text(name))
    ours = build_features(strategy, ohlcv, strategy.base_timeframe)
    complete = ~ours.isna().any(axis=1)
    assert complete.sum() > 4900
    assert set(ours.columns) == set(expected.columns)
    for column in ours.columns:
        np.testing.assert_allclose(ours.loc[complete, column], expected.loc[complete, column],
                                   rtol=1e-7, atol=1e-7, err_msg=column)


@pytest.mark.parametrize("name", OTHER_1H)
def test_other_label_sources_train_save_ktrdr_metadata_and_evaluate(name, sample_data_dir, tmp_path):
    strategy = parse_strategy(strategy_text(name), {"start_date": "2017-05-01", "end_date": "2017-12-31",
                                                    "epochs": 2})
    result = train_strategy(strategy, sample_data_dir, tmp_path)
    folder = result["model_path"]
    test = result["test_metrics"]
    expected_task = "regression" if name == "regression_example_v3" else "classification"
    assert result["task"] == expected_task and result["training_metrics"]["epochs_trained"] == 2
    v3 = json.loads((tmp_path / strategy.name / "1h_v1" / "metadata_v3.json").read_text())
    assert v3["resolved_features"] == strategy.feature_ids and v3["training_symbols"] == ["EURUSD"]
    assert v3["output_type"] == {"regression_example_v3": "regression", "trend_tb_signal_v1": "classification",
                                 "regime_classifier_seed_v1": "regime_classification"}[name]
    assert v3["model_type"] == "mlp" and v3["sequence_length"] is None
    assert len(v3["training_metrics"]["history"]["val_loss"]) == 2
    config = json.loads((tmp_path / strategy.name / "1h_v1" / "config.json").read_text())
    assert config["name"] == strategy.name and config["indicators"] == strategy.raw["indicators"]
    dataset = prepare_dataset(strategy, sample_data_dir)
    predictor = load_model(folder)
    x = apply_normalization(dataset.test.features, predictor.metadata["normalization"]).to_numpy(np.float32)
    if expected_task == "regression":
        assert config["model"]["output_format"] == "regression"
        assert set(test) >= {"test_accuracy", "test_loss", "mae", "zero_baseline_loss", "zero_baseline_mae",
                             "majority_baseline_accuracy"}
        sign_agreement = (np.sign(predictor.predict(x)) == np.sign(dataset.test.labels)).mean()
        assert sign_agreement == pytest.approx(test["test_accuracy"], abs=1e-9)
    else:
        assert len(test["per_class"]) == strategy.model.output_size == (4 if "regime" in name else 3)
        accuracy = (predictor.predict(x) == dataset.test.labels).mean()
        assert accuracy == pytest.approx(test["test_accuracy"], abs=1e-9)
    evaluated = evaluate_saved_model(tmp_path, folder, sample_data_dir, start=parse_when("2018-01-01"),
                                     end=parse_when("2018-02-07"))
    assert evaluated["task"] == expected_task
    assert evaluated["metrics"]["n_samples"] == evaluated["data"]["usable_bars"] > 300


def test_triple_barrier_split_is_purged_and_sampled_by_uniqueness(sample_data_dir):
    strategy = parse_strategy(strategy_text("trend_tb_signal_v1"), DATES)
    dataset = prepare_dataset(strategy, sample_data_dir)
    train_end = dataset.train.features.index.max()
    val_start = dataset.val.features.index.min()
    # Purged: the last training label's 50-bar window (at most) ends by the first validation bar.
    bars = load_ohlcv(sample_data_dir, "EURUSD", "1h", strategy.start, strategy.end)
    assert bars.index.get_loc(val_start) - bars.index.get_loc(train_end) >= 1
    n = dataset.summary["per_symbol"]["EURUSD"]["labelled_bars"]
    s = int(n * (1 - (0.15 + 0.15)))
    assert len(dataset.val.labels) + len(dataset.test.labels) == n - s
    assert len(dataset.val.labels) == int((n - s) * 0.15 / 0.3)
    assert len(dataset.train.labels) <= s - int(0.01 * n)  # the embargo
    assert len(dataset.train.labels) > s - 50 - int(0.01 * n)  # purged by each label's own holding period
    assert dataset.train.weights is not None and len(dataset.train.weights) == len(dataset.train.labels)
    assert dataset.val.weights is None
    assert set(np.unique(dataset.train.labels)) <= {0, 1, 2}


def test_several_symbols_are_labelled_split_and_stacked_per_symbol(sample_data_dir, tmp_path):
    shutil.copy(sample_data_dir / "EURUSD_1h.csv", tmp_path)
    other = load_ohlcv(sample_data_dir, "EURUSD", "1h")
    other[["open", "high", "low", "close"]] = other[["open", "high", "low", "close"]].to_numpy()[::-1] * 1.2
    write_bars(other, tmp_path / "MIRROR_1h.csv")  # the same bars reversed in time: other labels
    strategy = parse_strategy(strategy_text("v3_multi_indicator"), {**DATES, "symbols": ["EURUSD", "MIRROR"]})
    dataset = prepare_dataset(strategy, tmp_path)
    sizes = dataset.summary["per_symbol"]
    for symbol in ("EURUSD", "MIRROR"):
        bars = load_ohlcv(tmp_path, symbol, "1h", strategy.start, strategy.end)
        labels = pd.Series(zigzag_labels(bars["close"].to_numpy(), 0.025), index=bars.index)
        spans = {}
        for name in ("train", "val", "test"):
            split = getattr(dataset, name)
            rows = split.symbols == symbol
            assert rows.sum() == sizes[symbol]["split_sizes"][name]
            np.testing.assert_array_equal(split.labels[rows], labels.loc[split.features.index[rows]].to_numpy())
            spans[name] = split.features.index[rows]
        assert spans["train"].max() < spans["val"].min() and spans["val"].max() < spans["test"].min()
    assert dataset.summary["split_sizes"]["train"] == sum(s["split_sizes"]["train"] for s in sizes.values())


def test_evaluation_recomputes_features_on_a_new_range(sample_data_dir, tmp_path):
    strategy = parse_strategy(strategy_text("v3_multi_indicator"),
                              {"start_date": "2017-05-01", "end_date": "2017-12-31", "epochs": 1})
    trained = train_strategy(strategy, sample_data_dir, tmp_path)
    from trainhost.jobs.pipeline.strategy import parse_when

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
        [sys.executable, "-m", "trainhost.jobs.pipeline", str(REPO / "examples/strategies/v3_multi_indicator.yaml"),
         "--data-dir", str(sample_data_dir), "--models-dir", str(tmp_path), "--start", "2017-05-01",
         "--end", "2018-02-07", "--epochs", "2"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "majority-class baseline" in done.stdout
    assert str(tmp_path) in done.stdout


def test_producer_side_imports_no_torch_or_pandas():
    assert heavy_imports(["trainhost.jobs.producer", "trainhost.jobs.schemas",
                          "trainhost.jobs.pipeline.strategy"]) == []


def test_kept_rows_are_a_view_when_they_are_one_run_and_a_copy_otherwise():
    features = pd.DataFrame({"a": [np.nan, np.nan, 1.0, 2.0, 3.0, 4.0], "b": [np.nan, 1.0, 1.0, 1.0, 1.0, 1.0]})
    labelled = np.array([True, True, True, True, False, False])
    keep = usable_rows(features, labelled)
    assert keep.tolist() == [2, 3]  # after the warm-up, up to the last labelled row
    kept = take_rows(features, keep)
    assert kept.equals(features.iloc[keep]) and np.shares_memory(kept.to_numpy(), features.to_numpy())
    features.loc[3, "a"] = np.nan  # a gap mid-series
    keep = usable_rows(features, np.ones(6, dtype=bool))
    assert keep.tolist() == [2, 4, 5] and take_rows(features, keep).equals(features.iloc[keep])
    assert usable_rows(features, np.zeros(6, dtype=bool)) is None


@pytest.mark.parametrize("train_end", [None, "2017-08-25T23:00:00+00:00"])
def test_a_fold_split_trains_before_its_test_start_and_leaves_its_gap_out(sample_data_dir, train_end):
    """test_start_date (a walk-forward fold): train and validation are the labelled bars before it, in the
    strategy's proportion, the test split the bars from it; with train_end_date the bars between are in none."""
    test_start = pd.Timestamp("2017-09-01", tz="UTC")
    overrides = {"start_date": "2017-06-01", "end_date": "2017-10-01", "test_start_date": test_start.isoformat(),
                 **({"train_end_date": train_end} if train_end else {})}
    dataset = prepare_dataset(parse_strategy(strategy_text("v3_multi_indicator"), overrides), sample_data_dir)
    last_trained = max(dataset.train.features.index.max(), dataset.val.features.index.max())
    assert dataset.train.features.index.max() < dataset.val.features.index.min()
    assert dataset.test.features.index.min() >= test_start > last_trained
    if train_end:
        assert last_trained <= pd.Timestamp(train_end) and dataset.val.features.index.max() >= pd.Timestamp(
            train_end) - pd.Timedelta(hours=24)  # validation runs up to the gap
    share = len(dataset.train.labels) / (len(dataset.train.labels) + len(dataset.val.labels))
    assert share == pytest.approx(0.7 / 0.85, abs=0.01)


def test_a_train_end_needs_a_test_start_after_it():
    with pytest.raises(StrategyError, match="overrides.train_end_date"):
        parse_strategy(strategy_text("v3_multi_indicator"), {"train_end_date": "2017-09-01"})
