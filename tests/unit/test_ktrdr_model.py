"""A model folder KTRDR saved (tests/fixtures/ktrdr-backtest/model), evaluated as it is: its network and
features load, its outputs are KTRDR's own recorded probabilities, and its backtest is the one KTRDR's
engine recorded, trade for trade."""

from __future__ import annotations

import json
import shutil
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from tests.helpers.fixtures import KTRDR_MODEL, ktrdr_backtest_frame
from trainhost.jobs.pipeline.artifacts import load_model
from trainhost.jobs.pipeline.errors import PipelineError
from trainhost.jobs.pipeline.features import apply_normalization, build_feature_matrix
from trainhost.jobs.pipeline.metrics import predict_logits
from trainhost.jobs.pipeline.model_paths import read_model_summary
from trainhost.jobs.pipeline.session import evaluate_saved_model
from trainhost.jobs.pipeline.strategy import Strategy
from trainhost.worker.sample_data import write_sample_data

# KTRDR's indicators had 50 bars of warm-up, ours the whole file before the range: RSI and ADX are
# recursive, so the first bars' memberships (and probabilities) differ until the start is forgotten.
WARM_AFTER = 200


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("ktrdr")
    write_sample_data(root / "data")
    shutil.copytree(KTRDR_MODEL, root / "models" / "ktrdr" / "1h_v1")
    return root


def test_a_ktrdr_folder_loads_as_it_is(roots):
    folder = roots / "models" / "ktrdr" / "1h_v1"
    assert not (folder / "COMPLETE").exists()
    predictor = load_model(folder)
    assert predictor.spec == {"type": "mlp", "input_size": 6, "output_size": 3, "hidden_layers": [64, 32],
                              "activation": "relu", "dropout": 0.2}
    assert predictor.feature_names == json.loads((KTRDR_MODEL / "features.json").read_text())["fuzzy_features"]
    summary = read_model_summary(roots / "models", "ktrdr/1h_v1")  # what the producer checks before enqueueing
    assert (summary["strategy"], summary["symbol"], summary["timeframe"]) == ("v3_multi_indicator_example",
                                                                            "EURUSD", "1h")


@pytest.mark.parametrize("run", ["jan2018", "full_range"])
def test_its_outputs_are_ktrdrs_recorded_probabilities(roots, run):
    predictor = load_model(roots / "models" / "ktrdr" / "1h_v1")
    strategy = Strategy.from_dict(predictor.metadata["strategy"])
    bars = pd.read_csv(roots / "data" / "EURUSD_1h.csv", index_col=0, parse_dates=True)
    bars.index = pd.DatetimeIndex(bars.index, tz="UTC") if bars.index.tz is None else bars.index
    features = build_feature_matrix(strategy, {"1h": bars})
    decisions = ktrdr_backtest_frame(run, "decisions")
    rows = features.loc[pd.DatetimeIndex(pd.to_datetime(decisions["timestamp"]))]
    logits = predict_logits(predictor.model, apply_normalization(rows, predictor.metadata["normalization"])
                            .to_numpy(np.float32))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = decisions[["prob_BUY", "prob_HOLD", "prob_SELL"]].to_numpy()
    np.testing.assert_allclose(probabilities[WARM_AFTER:], expected[WARM_AFTER:], atol=1e-6)


@pytest.mark.parametrize("run", ["jan2018", "full_range"])
def test_its_evaluation_trades_as_ktrdrs_engine_did(roots, run):
    decisions = ktrdr_backtest_frame(run, "decisions")
    first, last = (datetime.fromisoformat(decisions["timestamp"].iloc[i]) for i in (0, -1))
    result = evaluate_saved_model(roots / "models", "ktrdr/1h_v1", roots / "data", start=first, end=last,
                                  session_id=f"replay-{run}")
    assert result["backtest"]["bars"] == len(decisions) and result["backtest"]["warnings"] == []
    ours = pd.read_csv(roots / "models" / "ktrdr" / "1h_v1" / result["backtest"]["folder"] / "trades.csv")
    theirs = ktrdr_backtest_frame(run, "trades")
    assert len(ours) == len(theirs) == result["backtest"]["metrics"]["trade_count"]
    for column in ("side", "entry_time", "exit_time", "quantity"):
        assert ours[column].tolist() == theirs[column].tolist(), column
    for column in ("entry_price", "exit_price", "gross_pnl"):  # trades.csv keeps 10 significant digits
        np.testing.assert_allclose(ours[column], theirs[column], rtol=1e-9, err_msg=column)


def test_a_folder_of_ours_without_its_marker_is_refused(roots, tmp_path):
    """An interrupted save of ours also holds KTRDR's files; our metadata.json tells it apart."""
    folder = tmp_path / "models" / "v3" / "1h_v2"
    shutil.copytree(KTRDR_MODEL, folder)
    (folder / "metadata.json").write_text(json.dumps({"strategy_name": "v3", "versions": {"trainhost": "0.2.0"}}))
    for read in (lambda: load_model(folder), lambda: read_model_summary(tmp_path / "models", "v3/1h_v2")):
        with pytest.raises(PipelineError, match="not a complete saved model folder"):
            read()


def test_a_ktrdr_folder_whose_features_do_not_match_its_strategy_is_refused(tmp_path):
    folder = tmp_path / "models" / "ktrdr" / "1h_v1"
    shutil.copytree(KTRDR_MODEL, folder)
    metadata = json.loads((folder / "metadata_v3.json").read_text())
    metadata["resolved_features"] = metadata["resolved_features"][::-1]
    (folder / "metadata_v3.json").write_text(json.dumps(metadata))
    with pytest.raises(PipelineError, match="resolved_features .* are not the features"):
        read_model_summary(tmp_path / "models", "ktrdr/1h_v1")
