"""LSTM/GRU windows (docs/ktrdr-semantics.md §8 "Sequences"), regression training and metrics (§9, §10),
weighted sampling (§7), and saving/loading every model kind."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.helpers.fixtures import strategy_text
from tests.helpers.floats import assert_float32_close
from tests.helpers.synthetic import subdivide_bars, write_bars
from trainhost.jobs.pipeline.artifacts import load_model, save_artifacts
from trainhost.jobs.pipeline.data import load_ohlcv, resample_ohlcv
from trainhost.jobs.pipeline.dataset import prepare_dataset, sequence_windows
from trainhost.jobs.pipeline.errors import PipelineError
from trainhost.jobs.pipeline.labels import make_labels
from trainhost.jobs.pipeline.metrics import evaluate_regression, forward_in_chunks
from trainhost.jobs.pipeline.model import RecurrentNetwork, build_model
from trainhost.jobs.pipeline.session import evaluate_saved_model, train_strategy
from trainhost.jobs.pipeline.strategy import parse_strategy, parse_when
from trainhost.jobs.pipeline.trainer import train_model
from trainhost.jobs.pipeline.training_settings import TrainingConfig


def config(**overrides) -> TrainingConfig:
    return TrainingConfig(**{"epochs": 3, "batch_size": 64, "learning_rate": 0.01, **overrides})


# ------------------------------------------------------------------------------------------- windows


def test_window_i_pairs_rows_i_to_i_plus_l_with_the_label_of_its_last_row():
    rows = np.arange(10)
    windows, kept = sequence_windows(rows, positions=np.arange(10), length=3, region_start=0)
    np.testing.assert_array_equal(kept, [False, False] + [True] * 8)  # N - L + 1 windows
    np.testing.assert_array_equal(windows, [[i, i + 1, i + 2] for i in range(8)])
    X, y = np.arange(10.0) * 10, np.arange(10) + 100
    for i, window in enumerate(windows):  # X[i : i+L] with y[i+L-1]
        np.testing.assert_array_equal(X[window], X[i:i + 3])
        assert y[rows[kept]][i] == y[i + 3 - 1]


def test_windows_stay_inside_their_region_and_skip_gaps():
    positions = np.array([0, 1, 2, 4, 5, 6, 7, 8])  # bar 3 was dropped (warm-up or a hole)
    rows = np.arange(8)
    windows, kept = sequence_windows(rows, positions, length=3, region_start=0)
    # windows ending at rows 3 (bars 1,2,4) and 4 (bars 2,4,5) would jump a bar
    np.testing.assert_array_equal(kept, [False, False, True, False, False, True, True, True])
    windows, kept = sequence_windows(rows[5:], positions, length=3, region_start=5)  # a region from row 5
    np.testing.assert_array_equal(kept, [False, False, True])
    np.testing.assert_array_equal(windows, [[5, 6, 7]])


def test_forward_in_chunks_gathers_each_window():
    torch.manual_seed(0)
    model = RecurrentNetwork("gru", 4, hidden_size=8, num_layers=2, output_size=3).eval()
    X = torch.randn(50, 4)
    windows = torch.tensor([[i, i + 1, i + 2, i + 3] for i in range(0, 46, 3)])
    with torch.no_grad():
        expected = model(torch.stack([X[w] for w in windows]))
        torch.testing.assert_close(forward_in_chunks(model, X, windows), expected)
        torch.testing.assert_close(forward_in_chunks(model, X, windows, chunk=4), expected)


def two_symbol_lstm_strategy(**overrides):
    doc = yaml.safe_load(strategy_text("v3_multi_indicator"))
    doc["training_data"]["symbols"] = {"mode": "multi_symbol", "list": ["EURUSD", "EURCOPY"]}
    doc["model"] = {"type": "gru", "architecture": {"sequence_length": 12, "hidden_size": 8, "num_layers": 1}}
    doc["training"]["labels"] = {"source": "triple_barrier", "max_holding_period": 12, "vol_span": 20,
                                 "compute_weights": True}
    return parse_strategy(doc, {"start_date": "2017-05-01", "end_date": "2017-10-31", **overrides})


@pytest.fixture(scope="module")
def two_symbols(sample_data_dir, tmp_path_factory):
    """EURUSD and EURCOPY (EURUSD x 1.3, seven weeks later) in one data root."""
    root = tmp_path_factory.mktemp("two_symbols")
    shutil.copy(sample_data_dir / "EURUSD_1h.csv", root)
    other = load_ohlcv(sample_data_dir, "EURUSD", "1h")
    other[["open", "high", "low", "close"]] *= 1.3
    other.index = other.index + pd.Timedelta(weeks=7)
    write_bars(other, root / "EURCOPY_1h.csv")
    return root


def test_windows_never_cross_a_split_or_a_symbol_and_labels_are_the_last_rows(two_symbols):
    strategy = two_symbol_lstm_strategy()
    dataset = prepare_dataset(strategy, two_symbols)
    length = strategy.model.sequence_length
    stamps = {}
    for name in ("train", "val", "test"):
        split = getattr(dataset, name)
        w = split.windows
        assert w.shape == (len(split.labels), length)
        assert (np.diff(w, axis=1) == 1).all()  # consecutive rows ...
        assert (split.symbols[w] == split.symbols[w[:, :1]]).all()  # ... of one symbol ...
        index = split.features.index
        hours = (index[w[:, -1]] - index[w[:, 0]]) / pd.Timedelta(hours=1)
        gaps = np.diff(index.asi8)[np.concatenate([np.arange(a, b) for a, b in zip(w[:, 0], w[:, -1], strict=True)])]
        assert (hours >= length - 1).all() and (gaps > 0).all()  # ... in time order
        for symbol in ("EURUSD", "EURCOPY"):
            rows = split.symbols == symbol
            stamps[name, symbol] = (index[rows].min(), index[rows].max())
    for symbol in ("EURUSD", "EURCOPY"):  # split in time per symbol: no test bar precedes a training bar
        assert stamps["train", symbol][1] < stamps["val", symbol][0] <= stamps["val", symbol][1] < \
            stamps["test", symbol][0]
    # Each window's label is its last row's own triple-barrier label.
    bars = load_ohlcv(two_symbols, "EURCOPY", "1h", strategy.start, strategy.end)
    values = pd.Series(make_labels("triple_barrier", strategy.labels.params, bars).values, index=bars.index)
    test = dataset.test
    last = test.windows[:, -1]
    mine = test.symbols[last] == "EURCOPY"
    np.testing.assert_array_equal(values.loc[test.features.index[last[mine]]].to_numpy(), test.labels[mine])
    assert dataset.train.weights is not None and dataset.train.weights.mean() == pytest.approx(1.0)
    assert dataset.summary["per_symbol"]["EURCOPY"]["split_sizes"]["train"] > 500


# ------------------------------------------------------------------------------------------- training


def test_lstm_learns_a_signal_that_needs_memory():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1600, 3)).astype(np.float32)
    y_rows = (np.roll(X[:, 0], 3) > 0).astype(np.int64)  # the label is feature 0 three bars earlier
    windows = np.array([np.arange(i - 4, i + 1) for i in range(4, 1600)])
    y = y_rows[windows[:, -1]]
    train, val = slice(0, 1200), slice(1200, None)
    torch.manual_seed(0)
    model = RecurrentNetwork("lstm", 3, hidden_size=16, num_layers=1, output_size=2, dropout=0.0)
    result = train_model(model, X, y[train], X, y[val], config(epochs=15, batch_size=64, learning_rate=0.02),
                         device="cpu", train_windows=windows[train], val_windows=windows[val])
    assert result.final_val_accuracy > 0.9
    assert result.history[0]["train_accuracy"] < result.final_train_accuracy


def test_weighted_sampling_draws_in_proportion_to_the_weights():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 4)).astype(np.float32)
    y = np.zeros(300, dtype=np.int64)
    y[7] = 1
    weights = np.zeros(300)
    weights[7] = 1.0  # only sample 7 (class 1) is ever drawn
    torch.manual_seed(0)
    model = build_model({"type": "mlp", "input_size": 4, "hidden_layers": [8], "output_size": 2, "dropout": 0.0})
    result = train_model(model, X, y, X[:50], y[:50], config(epochs=3), device="cpu", sample_weights=weights)
    assert result.final_train_accuracy == 1.0  # every draw was sample 7, and the model learnt it
    assert result.final_val_accuracy < 0.5  # so it predicts class 1 for most of the (class 0) validation rows
    with pytest.raises(PipelineError, match="sample_weights must be 300 non-negative numbers"):
        train_model(model, X, y, X[:50], y[:50], config(epochs=1), device="cpu", sample_weights=np.zeros(300))


def test_regression_learns_a_planted_return_and_beats_predicting_zero():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((3000, 3)).astype(np.float32)
    y = (0.004 * X[:, 0] + rng.normal(0, 0.001, 3000)).astype(np.float32)
    torch.manual_seed(0)
    model = build_model({"type": "mlp", "input_size": 3, "hidden_layers": [16], "output_size": 1, "dropout": 0.0})
    result = train_model(model, X[:2000], y[:2000], X[2000:2500], y[2000:2500],
                         config(loss="huber", huber_delta=0.01, epochs=20, weight_decay=0.0), device="cpu")
    assert result.final_val_accuracy > 0.8  # (pred > 0) == (y > 0)
    metrics = evaluate_regression(model, X[2500:], y[2500:])
    assert metrics["test_accuracy"] > 0.8 and metrics["zero_baseline_accuracy"] == 0.0
    assert metrics["mae"] < 0.6 * metrics["zero_baseline_mae"]
    assert metrics["test_loss"] < metrics["zero_baseline_loss"]
    assert metrics["correlation"] > 0.8 and metrics["n_samples"] == 500
    mse = train_model(build_model({"type": "mlp", "input_size": 3, "hidden_layers": [16], "output_size": 1}),
                      X[:2000], y[:2000], X[2000:2500], y[2000:2500],
                      config(loss="mse", epochs=2), device="cpu")
    assert mse.epochs_trained == 2


def test_regression_metrics_by_hand():
    class Constant(torch.nn.Module):
        def __init__(self, values):
            super().__init__()
            self.values = torch.nn.Parameter(torch.tensor(values)[:, None], requires_grad=False)

        def forward(self, x):
            return self.values[: len(x)]

    y = np.array([0.5, -0.5, 2.0, 0.0])
    metrics = evaluate_regression(Constant([0.4, 0.1, 0.0, -1.0]), np.zeros((4, 1), np.float32), y)
    assert metrics["test_accuracy"] == 0.25  # signs agree only on the first; sign(0) = 0 vs sign(2) = 1
    assert metrics["mae"] == pytest.approx((0.1 + 0.6 + 2.0 + 1.0) / 4)
    huber = [0.5 * 0.1**2, 0.5 * 0.6**2, 2.0 - 0.5, 0.5 * 1.0]  # δ = 1: linear beyond 1
    assert metrics["test_loss"] == pytest.approx(np.mean(huber))
    assert metrics["zero_baseline_accuracy"] == 0.25 and metrics["zero_baseline_mae"] == pytest.approx(0.75)
    assert metrics["majority_baseline_accuracy"] == 0.5


# ------------------------------------------------------------------------------------------- artifacts


@pytest.mark.parametrize("spec", [
    {"type": "lstm", "input_size": 5, "sequence_length": 7, "hidden_size": 6, "num_layers": 2, "dropout": 0.1,
     "output_size": 3},
    {"type": "gru", "input_size": 5, "sequence_length": 7, "hidden_size": 6, "num_layers": 1, "dropout": 0.1,
     "output_size": 4},
    {"type": "mlp", "input_size": 5, "hidden_layers": [8], "activation": "relu", "dropout": 0.1, "output_size": 1},
])
def test_every_model_kind_saves_and_loads(spec, tmp_path):
    torch.manual_seed(0)
    model = build_model(spec).eval()
    if spec["type"] != "mlp":  # KTRDR's state-dict keys (§8)
        kind, layers = spec["type"], spec["num_layers"]
        keys = {f"{kind}.{p}_{w}_l{i}" for i in range(layers) for p in ("weight", "bias") for w in ("ih", "hh")}
        assert set(model.state_dict()) == keys | {"fc.weight", "fc.bias"}
    task = "regression" if spec["output_size"] == 1 else "classification"
    folder = save_artifacts(tmp_path, "kinds", "1h", state_dict=model.state_dict(), history=[],
                            metadata={"model": spec, "features": list("abcde"), "task": task})
    predictor = load_model(folder)
    shape = (9, 5) if spec["type"] == "mlp" else (9, 7, 5)
    X = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(X)).numpy()
    assert_float32_close(predictor.predict_logits(X), expected)
    if task == "regression":
        assert_float32_close(predictor.predict(X), expected[:, 0])
        with pytest.raises(PipelineError, match="predicts returns"):
            predictor.predict_proba(X)
    else:
        assert predictor.predict_proba(X).shape == (9, spec["output_size"])
    with pytest.raises(PipelineError, match="takes"):
        predictor.predict_logits(X[:, 0] if spec["type"] != "mlp" else X[:, None])


# ------------------------------------------------------------------------------------------- the LSTM fixture


@pytest.fixture(scope="module")
def five_minute_root(sample_data_dir, tmp_path_factory):
    """Only a seeded synthetic EURUSD_5m.csv consistent with the real 1h bars: the 1h base is resampled."""
    root = tmp_path_factory.mktemp("five_minutes")
    real = load_ohlcv(sample_data_dir, "EURUSD", "1h", "2017-05-01", "2017-09-30")
    write_bars(subdivide_bars(real, 12, seed=7), root / "EURUSD_5m.csv")
    return root


def test_lstm_fixture_trains_on_5m_and_1h_and_evaluates(five_minute_root, tmp_path):
    strategy = parse_strategy(strategy_text("experiment_h003_lstm"),
                              {"start_date": "2017-05-01", "end_date": "2017-08-31", "epochs": 1})
    result = train_strategy(strategy, five_minute_root, tmp_path)
    assert result["data"]["per_symbol"]["EURUSD"]["timeframe_sources"] == {"1h": "resampled from 5m", "5m": "file"}
    assert result["model"]["type"] == "lstm" and result["model"]["input_size"] == 32
    folder = result["model_path"]
    v3 = json.loads((tmp_path / "experiment_h003_lstm" / "1h_v1" / "metadata_v3.json").read_text())
    assert (v3["model_type"], v3["sequence_length"], v3["output_type"]) == ("lstm", 20, "classification")
    assert v3["training_timeframes"] == ["1h", "5m"] and v3["resolved_features"] == strategy.feature_ids
    assert set(v3["normalization_params"]) == {f"{tf}_{ref}_raw" for tf in ("5m", "1h")
                                               for ref in ("rsi_14", "adx_14.adx", "macd_12_26_9.line", "roc_10")}
    assert v3["training_metrics"]["epochs_trained"] == 1
    features = json.loads((tmp_path / "experiment_h003_lstm" / "1h_v1" / "features.json").read_text())
    assert features["feature_count"] == 32
    # The saved model reproduces the test accuracy on the test windows.
    predictor = load_model(folder)
    dataset = prepare_dataset(strategy, five_minute_root)
    from trainhost.jobs.pipeline.features import apply_normalization

    x = apply_normalization(dataset.test.features, predictor.metadata["normalization"]).to_numpy(np.float32)
    accuracy = (predictor.predict(x[dataset.test.windows]) == dataset.test.labels).mean()
    assert accuracy == pytest.approx(result["test_metrics"]["test_accuracy"], abs=1e-9)
    evaluated = evaluate_saved_model(tmp_path, folder, five_minute_root, start=parse_when("2017-09-01"),
                                     end=parse_when("2017-09-30"))
    assert evaluated["metrics"]["n_samples"] == evaluated["data"]["usable_bars"] > 300


def test_resampled_base_equals_the_real_hourly_bars(five_minute_root, sample_data_dir):
    real = load_ohlcv(sample_data_dir, "EURUSD", "1h", "2017-05-01", "2017-09-30")
    made = resample_ohlcv(load_ohlcv(five_minute_root, "EURUSD", "5m"), "1h")
    np.testing.assert_allclose(made[["open", "high", "low", "close"]].to_numpy(),
                               real[["open", "high", "low", "close"]].to_numpy())
