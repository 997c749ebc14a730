"""Multi-timeframe data (docs/ktrdr-semantics.md §5.2 and our policy): resampling a missing timeframe,
joining every timeframe onto the base bars with no look-ahead, and training a multi-timeframe
strategy in-process."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.helpers.fixtures import strategy_text
from tests.helpers.synthetic import subdivide_bars, write_bars
from trainhost.jobs.pipeline.data import load_ohlcv, load_timeframes, resample_ohlcv
from trainhost.jobs.pipeline.data_paths import check_data_available
from trainhost.jobs.pipeline.dataset import load_symbol, prepare_dataset
from trainhost.jobs.pipeline.errors import DataError
from trainhost.jobs.pipeline.features import align_to_base, build_feature_matrix
from trainhost.jobs.pipeline.session import evaluate_saved_model, train_strategy
from trainhost.jobs.pipeline.strategy import parse_strategy, parse_when
from trainhost.jobs.pipeline.timeframes import divides, timeframe_error, timeframe_minutes, timeframe_months

UTC = "UTC"


def hourly(closes, start="2024-01-01 00:00", step="1h") -> pd.DataFrame:
    closes = np.asarray(closes, dtype=float)
    index = pd.date_range(start, periods=len(closes), freq=step, tz=UTC, name="timestamp")
    opens = np.concatenate([[closes[0]], closes[:-1]])
    return pd.DataFrame({"open": opens, "high": np.maximum(opens, closes) + 0.5,
                         "low": np.minimum(opens, closes) - 0.5, "close": closes,
                         "volume": np.arange(1.0, len(closes) + 1)}, index=index)


def random_walk(n: int, seed: int = 0, start: str = "2024-01-01 00:00") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return hourly(100 * np.exp(np.cumsum(rng.normal(0, 0.002, n))), start)


def mtf_strategy(timeframes=("1h", "4h", "1d"), **overrides):
    doc = yaml.safe_load(strategy_text("v3_multi_timeframe"))
    doc["training_data"]["timeframes"] = {"mode": "multi_timeframe", "list": list(timeframes),
                                          "base_timeframe": timeframes[0]}
    doc["indicators"]["roc_3"] = {"type": "roc", "period": 3}
    doc["nn_inputs"].append({"raw_indicator": "roc_3", "timeframes": "all"})
    return parse_strategy(doc, overrides or None)


# ------------------------------------------------------------------------------------------- resampling


def test_resample_takes_first_max_min_last_sum_at_bar_open_times():
    bars = hourly([10, 11, 9, 12, 13, 14, 8, 15, 16, 17])  # 00:00 .. 09:00
    bars = bars.drop(bars.index[5])  # a gap at 05:00
    four = resample_ohlcv(bars, "4h")
    assert [t.strftime("%H:%M") for t in four.index] == ["00:00", "04:00", "08:00"]
    first = four.iloc[0]
    assert (first.open, first.high, first.low, first.close, first.volume) == (
        10.0, 12.5, 8.5, 12.0, 1 + 2 + 3 + 4)
    second = four.iloc[1]  # 04:00, 06:00, 07:00 (05:00 missing)
    assert (second.open, second.close, second.volume) == (12.0, 15.0, 5 + 7 + 8)
    assert second.low == 7.5 and second.high == 15.5


def test_resample_anchors_days_at_midnight_and_weeks_on_mondays():
    bars = random_walk(24 * 15, start="2024-01-03 05:00")  # a Wednesday
    days, weeks = resample_ohlcv(bars, "1d"), resample_ohlcv(bars, "1w")
    assert days.index[0] == pd.Timestamp("2024-01-03", tz=UTC) and (days.index.hour == 0).all()
    assert weeks.index[0] == pd.Timestamp("2024-01-01", tz=UTC) and (weeks.index.day_of_week == 0).all()
    assert days.iloc[0].open == bars.iloc[0].open and days.iloc[0].close == bars.loc["2024-01-03 23:00"].close
    assert resample_ohlcv(bars, "1M").index[0] == pd.Timestamp("2024-01-01", tz=UTC)


def test_missing_timeframes_are_resampled_from_the_base(sample_data_dir):
    frames, sources = load_timeframes(sample_data_dir, "EURUSD", ["1h", "4h", "1d"], "1h", "2017-05-01",
                                      "2018-02-07")
    assert sources == {"1h": "file", "4h": "resampled from 1h", "1d": "resampled from 1h"}
    base = load_ohlcv(sample_data_dir, "EURUSD", "1h")
    pd.testing.assert_frame_equal(frames["4h"], resample_ohlcv(base, "4h").loc["2017-05-01 00:00":"2018-02-07 00:00"],
                                  check_freq=False)
    assert frames["1d"].index[0] == pd.Timestamp("2017-05-01", tz=UTC)


def test_a_missing_base_is_resampled_from_a_finer_timeframe(tmp_path, sample_data_dir):
    """The [5m, 1h] case with only a 5m file: the 1h base is made from it (and equals the real 1h)."""
    real = load_ohlcv(sample_data_dir, "EURUSD", "1h", end="2017-06-30")
    write_bars(subdivide_bars(real, 12, seed=1), tmp_path / "EURUSD_5m.csv")
    frames, sources = load_timeframes(tmp_path, "EURUSD", ["1h", "5m"], "1h")
    assert sources == {"1h": "resampled from 5m", "5m": "file"}
    assert len(frames["5m"]) == 12 * len(real)
    np.testing.assert_allclose(frames["1h"][["open", "high", "low", "close"]].to_numpy(),
                               real[["open", "high", "low", "close"]].to_numpy())
    assert (frames["1h"].index == real.index).all()


def test_check_data_available_accepts_what_can_be_resampled(tmp_path, sample_data_dir):
    shutil.copy(sample_data_dir / "EURUSD_1h.csv", tmp_path)
    check_data_available(tmp_path, parse_strategy(strategy_text("v3_multi_timeframe")))
    with pytest.raises(DataError) as caught:  # 5m cannot be made from 1h
        check_data_available(tmp_path, parse_strategy(strategy_text("experiment_h003_lstm")))
    assert str(caught.value).startswith(f"no data file EURUSD_5m.csv in {tmp_path.resolve()}; a missing "
                                        "timeframe is resampled only from a finer one of the run")


def test_a_native_higher_file_that_ends_early_cuts_the_base(tmp_path):
    base = random_walk(24 * 20)
    write_bars(base, tmp_path / "TEST_1h.csv")
    write_bars(resample_ohlcv(base, "4h").iloc[:60], tmp_path / "TEST_4h.csv")  # 10 days of 4h bars
    frames, sources = load_timeframes(tmp_path, "TEST", ["1h", "4h"], "1h")
    assert sources == {"1h": "file", "4h": "file"}
    # The last 4h bar opens day 10 at 20:00 and closes at 24:00; base bars closing after 04:00 are cut.
    assert frames["1h"].index[-1] == pd.Timestamp("2024-01-11 03:00", tz=UTC)


# ------------------------------------------------------------------------------------------- the join


def test_a_higher_bar_is_visible_once_it_has_closed():
    base_index = pd.date_range("2024-01-01 00:00", periods=13, freq="1h", tz=UTC)
    four = pd.DataFrame({"x": [1.0, 2.0, 3.0]}, index=pd.date_range("2024-01-01", periods=3, freq="4h", tz=UTC))
    aligned = align_to_base(four, "4h", base_index, "1h")["x"]
    # The 4h bar opening 00:00 closes 04:00: first seen by the 1h bar opening 03:00 (closing 04:00).
    assert aligned.loc["2024-01-01 02:00"] != aligned.loc["2024-01-01 02:00"]  # NaN
    assert aligned.loc["2024-01-01 03:00"] == 1.0
    assert aligned.loc["2024-01-01 10:00"] == 2.0  # 08:00 bar not closed until 12:00
    assert aligned.loc["2024-01-01 11:00"] == 3.0
    assert aligned.loc["2024-01-01 12:00"] == 3.0


def test_a_lower_timeframe_gives_its_last_bar_closed_within_the_base_bar():
    base_index = pd.date_range("2024-01-01 10:00", periods=2, freq="1h", tz=UTC)
    fives = pd.DataFrame({"x": np.arange(36.0)}, index=pd.date_range("2024-01-01 09:00", periods=36, freq="5min",
                                                                     tz=UTC))
    aligned = align_to_base(fives, "5m", base_index, "1h")["x"]
    assert aligned.tolist() == [23.0, 35.0]  # the 5m bars opening 10:55 and 11:55


def naive_join(values: pd.DataFrame, base_index: pd.DatetimeIndex) -> pd.DataFrame:
    """What a forward fill by bar-open timestamp does (KTRDR's backtest, §5.2): it looks ahead."""
    return values.reindex(values.index.union(base_index)).ffill().reindex(base_index)


def test_no_look_ahead_with_a_planted_future():
    """Features of every base bar up to a cut are the same whatever happens after the cut: a planted
    crash after it changes nothing before it. A join by bar-open time fails the same check."""
    strategy = mtf_strategy()
    bars = random_walk(24 * 40)
    cut = pd.Timestamp("2024-01-25 13:00", tz=UTC)  # mid 4h bar and mid day
    planted = bars.copy()
    after = planted.index > cut
    planted.loc[after, ["open", "high", "low", "close"]] *= 0.7  # the future crashes
    planted.loc[after, "high"] *= 1.5

    def features(frame):
        frames = {tf: frame if tf == "1h" else resample_ohlcv(frame, tf) for tf in strategy.feature_timeframes}
        return build_feature_matrix(strategy, frames)

    original, changed = features(bars), features(planted)
    assert list(original.columns) == strategy.feature_ids
    before = original.index <= cut
    pd.testing.assert_frame_equal(original[before], changed[before])
    assert not original[~before].equals(changed[~before])  # the plant did change the future
    assert original.loc[before, "1d_rsi_14_neutral"].notna().sum() > 24 * 8
    truncated = features(bars[bars.index <= cut])  # and the features never needed the future at all
    pd.testing.assert_frame_equal(original[before], truncated)

    four = resample_ohlcv(bars, "4h")
    crashed = resample_ohlcv(planted, "4h")
    leaked = naive_join(crashed, planted.index)["close"][before] != naive_join(four, bars.index)["close"][before]
    assert leaked.any()  # the 4h bar opening 12:00 carries the crash into the base bar at 12:00 and 13:00


def test_multi_timeframe_rows_need_every_timeframe_warmed_up(sample_data_dir):
    strategy = mtf_strategy(start_date="2017-05-01", end_date="2017-08-31")
    data = load_symbol(strategy, sample_data_dir, "EURUSD", strategy.start, strategy.end)
    assert not data.features.isna().any().any()
    # RSI(14) on days needs 15 daily bars: no usable row before the 15th day has closed.
    assert data.features.index[0] >= pd.Timestamp("2017-05-15", tz=UTC)
    assert data.sources == {"1h": "file", "4h": "resampled from 1h", "1d": "resampled from 1h"}


# ------------------------------------------------------------------------------------------- end to end


def test_multi_timeframe_fixture_trains_saves_and_evaluates(sample_data_dir, tmp_path):
    strategy = parse_strategy(strategy_text("v3_multi_timeframe"),
                              {"start_date": "2017-05-01", "end_date": "2017-12-31", "epochs": 2})
    result = train_strategy(strategy, sample_data_dir, tmp_path)
    assert result["features"] == [f"{tf}_rsi_14_{mf}" for tf in ("1h", "4h", "1d")
                                  for mf in ("oversold", "neutral", "overbought")]
    assert result["data"]["per_symbol"]["EURUSD"]["timeframe_sources"]["1d"] == "resampled from 1h"
    assert result["model_path"].endswith("1h_v1")
    dataset = prepare_dataset(strategy, sample_data_dir)
    assert result["data"]["split_sizes"] == {"train": len(dataset.train.labels),
                                             "validation": len(dataset.val.labels), "test": len(dataset.test.labels)}
    evaluated = evaluate_saved_model(tmp_path, result["model_path"], sample_data_dir,
                                     start=parse_when("2018-01-01"), end=parse_when("2018-02-07"))
    assert evaluated["data"]["timeframe_sources"]["4h"] == "resampled from 1h"
    assert evaluated["metrics"]["n_samples"] == evaluated["data"]["usable_bars"] > 250  # after 15 days of 1d warm-up


def test_timeframe_arithmetic():
    assert (timeframe_minutes("5m"), timeframe_minutes("4h"), timeframe_minutes("1w")) == (5, 240, 10080)
    assert timeframe_minutes("1M") is None and timeframe_months("3M") == 3 and timeframe_months("1d") is None
    assert divides("1h", "4h") and divides("5m", "1h") and divides("1d", "1w") and divides("1h", "1M")
    assert divides("1M", "3M") and not divides("2M", "3M")
    assert not divides("4h", "1h") and not divides("1h", "1h") and not divides("7h", "1d")
    assert not divides("1M", "1w") and not divides("7h", "1M")
    assert timeframe_error("4h") is None and timeframe_error("1M") is None
    assert timeframe_error("0h") and timeframe_error("1y") and timeframe_error("1H") and timeframe_error(4)
