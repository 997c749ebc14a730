"""Label sources other than zigzag (docs/ktrdr-semantics.md §6.2-§6.5), the purged split (§7) and uniqueness
weights: hand-checked series, KTRDR's own labels where the reference fixtures have them, and a
line-by-line port of KTRDR's triple-barrier loop on the real sample data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.helpers.fixtures import OHLCV, reference_frame, strategy_text
from trainhost.jobs.pipeline.dataset import purged_split
from trainhost.jobs.pipeline.errors import DataError
from trainhost.jobs.pipeline.labels import (
    BEARISH,
    BULLISH,
    NEUTRAL,
    barrier_classes,
    context_labels,
    cusum_events,
    extreme_pivots,
    forward_returns,
    make_labels,
    regime_labels,
    triple_barrier_labels,
    uniqueness_weights,
    volatile_mask,
)
from trainhost.jobs.pipeline.strategy import parse_strategy


def bars(close, high=None, low=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    close = np.asarray(close, dtype=float)
    high = close * 1.01 if high is None else np.asarray(high, dtype=float)
    low = close * 0.99 if low is None else np.asarray(low, dtype=float)
    return high, low, close


def reference_ohlcv(name: str) -> pd.DataFrame:
    return reference_frame(name, "indicators")[OHLCV]


def reference_labels(name: str) -> pd.Series:
    return reference_frame(name, "labels")["label"]


# ------------------------------------------------------------------------------------------- triple barrier


def test_triple_barrier_on_a_hand_checked_series():
    # (H - L)/C is 0.02 on every bar, so σ = 0.02 throughout; pt = sl = 1: barriers at ±2% of the entry close.
    high, low, close = bars([100, 100, 101.5, 100, 97, 100, 100, 100, 100])
    labels, holds = triple_barrier_labels(high, low, close, pt_multiplier=1, sl_multiplier=1,
                                          max_holding_period=3, vol_span=2)
    # t0: bar 2's high 102.515 >= 102 (up, k=2); t1: the same bar (k=1); t2: bar 3's low 99 <= 99.47;
    # t3: bar 4's low 96.03 <= 98; t4: bar 5's high 101 >= 98.94; t5: nothing within 3 bars, return 0 -> 0.
    np.testing.assert_array_equal(labels, [1, 1, -1, -1, 1, 0])
    np.testing.assert_array_equal(holds, [2, 1, 1, 1, 1, 3])
    np.testing.assert_array_equal(barrier_classes(labels), [0, 0, 2, 2, 0, 1])  # BUY, HOLD, SELL


@pytest.mark.parametrize("exit_close, expected", [(100.5, 1), (100.0, 1), (99.5, -1)])
def test_triple_barrier_both_barriers_on_one_bar_follow_that_bars_close(exit_close, expected):
    close = [100, exit_close, 100, 100, 100, 100]
    high, low, _ = bars(close)
    high[1], low[1] = 103, 97  # bar 1 crosses both ±2% barriers of bar 0
    labels, holds = triple_barrier_labels(high, low, np.asarray(close, float), pt_multiplier=1, sl_multiplier=1,
                                          max_holding_period=2, vol_span=2)
    assert (labels[0], holds[0]) == (expected, 1)


def test_triple_barrier_expiry_uses_the_sign_of_a_large_enough_return():
    # No barrier is touched (pt = sl = 10), so each label is the h-bar return against σ·√h/2 = 0.02·√2/2.
    high, low, close = bars([100, 100, 100.5, 102, 100, 100, 98])
    labels, holds = triple_barrier_labels(high, low, close, pt_multiplier=10, sl_multiplier=10,
                                          max_holding_period=2, vol_span=2)
    np.testing.assert_array_equal(labels, [0, 1, 0, -1, -1])  # +0.5% and -0.49% are inside the ±1.41% band
    np.testing.assert_array_equal(holds, [2, 2, 2, 2, 2])


def test_triple_barrier_needs_holding_period_plus_span_bars():
    with pytest.raises(DataError, match="at least max_holding_period \\+ vol_span = 7 bars, got 6"):
        triple_barrier_labels(*bars(np.full(6, 100.0)), max_holding_period=2, vol_span=5)


def ktrdr_triple_barrier(high, low, close, pt=2.0, sl=1.5, h=50, span=50, method="atr"):
    """KTRDR's TripleBarrierLabeler.generate_labels, transcribed loop for loop."""
    if method == "atr":
        vol = pd.Series((high - low) / close).ewm(span=span).mean().to_numpy().astype(np.float64)
    else:
        vs = pd.Series(np.diff(np.log(close))).ewm(span=span).std()
        vol = np.empty(len(close))
        vol[0] = np.nan
        vol[1:] = vs.to_numpy()
    first_valid = min(span, len(vol) - 1)
    for i in range(first_valid):
        if np.isnan(vol[i]) or vol[i] == 0:
            vol[i] = vol[first_valid]
    n = len(close) - h
    labels, holds = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for t in range(n):
        entry, v = close[t], vol[t]
        upper, lower = entry * (1 + pt * v), entry * (1 - sl * v)
        label, hold = 0, h
        for dt in range(1, h + 1):
            hit_up, hit_down = high[t + dt] >= upper, low[t + dt] <= lower
            if hit_up and hit_down:
                label, hold = (1 if close[t + dt] >= entry else -1), dt
                break
            if hit_up or hit_down:
                label, hold = (1 if hit_up else -1), dt
                break
        if label == 0:
            ret = (close[t + h] - entry) / entry
            label = 0 if abs(ret) < v * np.sqrt(h) * 0.5 else int(np.sign(ret))
        labels[t], holds[t] = label, hold
    return labels, holds


@pytest.mark.parametrize("params", [
    {"max_holding_period": 50, "vol_span": 50, "vol_method": "atr"},  # trend_tb_signal_v1
    {"max_holding_period": 24, "vol_span": 14, "vol_method": "atr"},  # experiment_h003_lstm
    {"max_holding_period": 10, "vol_span": 20, "vol_method": "close", "pt_multiplier": 1.0, "sl_multiplier": 1.0},
])
def test_triple_barrier_matches_ktrdrs_loop_on_the_sample_data(params):
    ohlcv = reference_ohlcv("trend_tb_signal_v1")
    high, low, close = (ohlcv[c].to_numpy() for c in ("high", "low", "close"))
    ours = triple_barrier_labels(high, low, close, **params)
    theirs = ktrdr_triple_barrier(high, low, close, params.get("pt_multiplier", 2.0),
                                  params.get("sl_multiplier", 1.5), params["max_holding_period"], params["vol_span"],
                                  params["vol_method"])
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_array_equal(ours[1], theirs[1])
    assert len(ours[0]) == len(close) - params["max_holding_period"]


def test_cusum_events_on_a_hand_checked_series():
    # Log returns 0.025, 0.005, 0.018, -0.03 with h = 0.01: S+ reaches 0.015 > h at bar 1 (reset); S- reaches
    # -0.02 < -h at bar 4.
    close = 100 * np.exp(np.cumsum([0, 0.025, 0.005, 0.018, -0.03]))
    np.testing.assert_array_equal(cusum_events(close, threshold=0.01), [False, True, False, False, True])


def test_uniqueness_weights_by_hand_and_against_ktrdrs_loop():
    # Active bars: label 0 [0, 2), label 1 [1, 3), label 2 [2, 3) -> concurrency 1, 2, 2.
    weights = uniqueness_weights(np.array([0, 1, 2]), np.array([2, 2, 1]))
    raw = np.array([(1 + 0.5) / 2, (0.5 + 0.5) / 2, 0.5])
    np.testing.assert_allclose(weights, raw / raw.mean())
    rng = np.random.default_rng(3)
    holds = rng.integers(1, 30, 400)
    concurrency = np.zeros(400 + 30)
    for i, hold in enumerate(holds):
        concurrency[i:i + hold] += 1
    expected = np.array([np.mean(1 / concurrency[i:i + hold]) for i, hold in enumerate(holds)])
    np.testing.assert_allclose(uniqueness_weights(np.arange(400), holds), expected / expected.mean())


def test_make_labels_keeps_bars_aligned_and_applies_cusum_and_weights():
    ohlcv = reference_ohlcv("trend_tb_signal_v1")
    params = parse_strategy(strategy_text("trend_tb_signal_v1")).labels.params
    labels = make_labels("triple_barrier", params, ohlcv)
    assert len(labels.values) == len(ohlcv) and np.isnan(labels.values[-50:]).all()
    assert not np.isnan(labels.values[:-50]).any()
    assert labels.weights is not None and np.nanmean(labels.weights) == pytest.approx(1.0)
    with_events = make_labels("triple_barrier", {**params, "cusum_threshold": 0.0}, ohlcv)
    events = ~np.isnan(with_events.values)
    assert 0.05 < events.mean() < 0.9  # only CUSUM event bars keep a label
    kept = with_events.values[events]
    np.testing.assert_array_equal(kept, labels.values[events])  # the same label where one is kept
    assert (with_events.holds[~events] == 0).all()


# ------------------------------------------------------------------------------------------- forward return, context


def test_forward_returns_and_context_by_hand():
    close = np.array([100, 110, 99, 121.0])
    np.testing.assert_allclose(forward_returns(close, 1), [0.1, -0.1, 22 / 99, np.nan])
    np.testing.assert_allclose(forward_returns(close, 2), [-0.01, 0.1, np.nan, np.nan])
    labels = context_labels(close, 1, bullish_threshold=0.15, bearish_threshold=-0.05)
    np.testing.assert_array_equal(labels, [NEUTRAL, BEARISH, BULLISH, np.nan])
    assert np.isnan(context_labels(close, 4)).all()
    with pytest.raises(DataError, match="horizon 4 need at least 5 bars, got 4"):
        forward_returns(close, 4)


def test_forward_returns_match_ktrdr_on_the_sample_data():
    expected = reference_labels("regression_example_v3")
    ohlcv = reference_ohlcv("regression_example_v3")
    ours = forward_returns(ohlcv["close"].to_numpy(), 20)
    assert len(expected) == len(ours) - 20 and np.isnan(ours[-20:]).all()
    assert (expected.index == ohlcv.index[:-20]).all()
    np.testing.assert_allclose(ours[:-20], expected.to_numpy(), rtol=2e-7, atol=1e-10)  # float32 in the CSV


# ------------------------------------------------------------------------------------------- regime


def test_regime_zigzag_confirms_extremes_and_appends_the_last():
    close = [100, 105, 111, 108, 99, 95, 100, 106, 104]
    assert extreme_pivots(close, 0.1) == [(0, 100), (2, 111), (5, 95), (7, 106)]
    assert extreme_pivots([100, 101, 102], 0.1) == [(0, 100)]  # never moved by the threshold


def test_volatile_mask_compares_forward_and_past_volatility():
    rng = np.random.default_rng(0)
    returns = rng.normal(0, 0.001, 300)
    returns[200:220] *= 10  # a burst
    close = 100 * np.exp(np.concatenate([[0], np.cumsum(returns)]))
    mask = volatile_mask(close, vol_lookback=50, vol_crisis_threshold=2.0, forward=14)
    assert mask[190:205].any() and not mask[:150].any()
    assert not mask[:50].any() and not mask[-14:].any()  # no past window yet / no forward window


def test_regime_labels_match_ktrdrs_labels_csv():
    """KTRDR's labels.csv for regime_classifier_seed_v1 is MultiScaleRegimeLabeler's own output on all
    5,000 bars (one label per timestamp), i.e. before §7's v-bar feature shift: comparable one to one."""
    expected = reference_labels("regime_classifier_seed_v1")
    ohlcv = reference_ohlcv("regime_classifier_seed_v1")
    params = parse_strategy(strategy_text("regime_classifier_seed_v1")).labels.params
    ours = make_labels("regime", params, ohlcv).values
    assert (expected.index == ohlcv.index).all()
    np.testing.assert_array_equal(ours, expected.to_numpy(dtype=float))
    np.testing.assert_array_equal(np.bincount(ours.astype(int)), [2181, 1858, 758, 203])


def test_regime_keys_ktrdr_drops_change_the_labels():
    ohlcv = reference_ohlcv("regime_classifier_seed_v1")
    high, low, close = (ohlcv[c].to_numpy() for c in ("high", "low", "close"))
    default = regime_labels(high, low, close)
    for key, value in {"macro_atr_mult": 5.0, "micro_atr_mult": 0.5, "atr_period": 30,
                       "progression_tolerance": 1.0}.items():
        assert (regime_labels(high, low, close, **{key: value}) != default).mean() > 0.01, key
    assert np.isnan(regime_labels(high[:15], low[:15], close[:15])).all()  # N < atr_period + 2


def test_regime_bars_after_the_last_pivot_have_no_label():
    # Up 20%, then down 5%: the last running extreme (bar 5) is the last pivot; later bars are NaN.
    close = np.array([100, 104, 108, 112, 116, 120, 118, 116, 114.0])
    labels = regime_labels(close * 1.001, close * 0.999, close, atr_period=2, macro_atr_mult=2, micro_atr_mult=1)
    assert not np.isnan(labels[:6]).any() and np.isnan(labels[6:]).all()


# ------------------------------------------------------------------------------------------- purged split


def test_purged_split_by_hand():
    positions, holds = np.arange(20), np.full(20, 2)
    train, s, t = purged_split(positions, holds, 0.7, 0.15, 0.15)
    # s = 14, embargo ⌊0.2⌋ = 0, i + 2 <= 14 keeps 0..12; validation ⌊6 · 0.15/0.3⌋ = 3 samples.
    np.testing.assert_array_equal(train, np.arange(13))
    assert (s, t) == (14, 17)
    holds[13] = 1  # a label that ends on the first validation bar stays (KTRDR's i + hold <= s)
    np.testing.assert_array_equal(purged_split(positions, holds, 0.7, 0.15, 0.15)[0], np.arange(14))


def test_purged_split_embargo_and_bar_positions():
    n = 300
    positions = np.arange(n) * 2  # samples every other bar (e.g. CUSUM events)
    train, s, t = purged_split(positions, np.full(n, 5), 0.7, 0.15, 0.15)
    assert s == 210 and train.max() == 210 - 3 - 1  # embargo ⌊0.01·300⌋ = 3 samples
    assert (positions[train] + 5 <= positions[s]).all()
    train, _, _ = purged_split(positions, np.full(n, 50), 0.7, 0.15, 0.15)
    assert train.max() == (positions[s] - 50) // 2  # purged: the label window must end by the validation start
