"""Indicators (docs/ktrdr-semantics.md §2): hand-checked small series, spec-literal loops, TA-Lib."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import talib

from trainhost.jobs.pipeline.errors import DataError, StrategyError
from trainhost.jobs.pipeline.indicator_specs import SPECS
from trainhost.jobs.pipeline.indicators import compute_indicator, indicator_columns

nan = np.nan


def frame(close, high=None, low=None, volume=None) -> pd.DataFrame:
    close = np.asarray(close, dtype=float)
    high = close if high is None else np.asarray(high, dtype=float)
    low = close if low is None else np.asarray(low, dtype=float)
    volume = np.ones(len(close)) if volume is None else np.asarray(volume, dtype=float)
    index = pd.date_range("2024-01-01", periods=len(close), freq="h", tz="UTC")
    return pd.DataFrame({"open": close, "high": high, "low": low, "close": close, "volume": volume}, index)


def single(type_name: str, params: dict, f: pd.DataFrame) -> np.ndarray:
    out = compute_indicator(type_name, params, f)
    assert list(out) == [""]
    return out[""]


def close_to(actual, expected, rtol=1e-12):
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=float), rtol=rtol, atol=1e-12)


@pytest.fixture(scope="module")
def eurusd(sample_data_dir) -> pd.DataFrame:
    return pd.read_csv(sample_data_dir / "EURUSD_1h.csv", index_col=0, parse_dates=True)


@pytest.fixture(scope="module")
def random_ohlcv() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 300
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    close[50:55] = close[50]  # a flat stretch: zero changes and zero ranges
    high = close * (1 + np.abs(rng.normal(0, 0.005, n)))
    low = close * (1 - np.abs(rng.normal(0, 0.005, n)))
    high[50:55], low[50:55] = close[50:55], close[50:55]
    return frame(close, high, low, rng.integers(0, 1000, n))


# --- hand-checked small series -----------------------------------------------------------------

def test_rsi_hand_checked():
    # changes +1 +1 -1 +1; seed at t=2: AG=1, AL=0 -> 100; then AG .5/AL .5 -> 50; AG .75/AL .25 -> 75
    close_to(single("rsi", {"period": 2}, frame([1, 2, 3, 2, 3])), [nan, nan, 100, 50, 75])


def test_rsi_flat_series_is_50_and_all_gains_100():
    close_to(single("rsi", {"period": 3}, frame([5.0] * 6)), [nan, nan, nan, 50, 50, 50])
    close_to(single("rsi", {"period": 2}, frame([1, 2, 3, 4])), [nan, nan, 100, 100])


def test_roc_hand_checked_and_inf_becomes_nan():
    close_to(single("roc", {"period": 2}, frame([1, 2, 4, 2])), [nan, nan, 300, 0])
    close_to(single("roc", {"period": 1}, frame([0, 1, 2])), [nan, nan, 100])


def test_macd_hand_checked():
    # fast span 1 = price; slow span 2 (alpha 2/3) = 3, 5, 23/3, 77/9; signal span 2 of the line
    out = compute_indicator("macd", {"fast_period": 1, "slow_period": 2, "signal_period": 2}, frame([3, 6, 9, 9]))
    assert list(out) == ["line", "signal", "histogram"]
    close_to(out["line"], [0, 1, 4 / 3, 4 / 9])
    close_to(out["signal"], [0, 2 / 3, 10 / 9, 2 / 3])
    close_to(out["histogram"], [0, 1 / 3, 2 / 9, -2 / 9])


def test_macd_aliases_are_honoured_and_giving_both_is_refused():
    f = frame(np.linspace(1, 2, 40) ** 2)
    canonical = compute_indicator("macd", {"fast_period": 3, "slow_period": 7, "signal_period": 4}, f)
    aliased = compute_indicator("macd", {"fast": 3, "slow": 7, "signal": 4}, f)
    default = compute_indicator("macd", {}, f)
    for name in canonical:
        np.testing.assert_array_equal(aliased[name], canonical[name])
    assert not np.allclose(default["line"], canonical["line"])
    with pytest.raises(StrategyError, match="macd.fast give either 'fast' or 'fast_period', not both"):
        compute_indicator("macd", {"fast": 5, "fast_period": 3, "slow_period": 7, "signal_period": 4}, f)


def test_resolve_fills_defaults_maps_aliases_and_normalises():
    resolution = SPECS["macd"].resolve({"fast": 5, "source": "Close", "colour": "red"})
    assert resolution.params == {"fast_period": 5, "slow_period": 26, "signal_period": 9, "source": "close"}
    assert resolution.errors == {} and resolution.unknown == ("colour",)
    resolution = SPECS["distancefromma"].resolve({"ma_type": "ema"})
    assert resolution.params["ma_type"] == "EMA"
    bands = SPECS["bollingerbands"].resolve({"multiplier": 3})
    assert bands.params["multiplier"] == 3.0 and isinstance(bands.params["multiplier"], float)
    refused = SPECS["rsi"].resolve({"period": 1, "source": "vwap"})
    assert set(refused.errors) == {"period", "source"}


def _wilder_loop(x, n):
    out, prev = [], None
    for v in x:
        prev = v if prev is None else prev + (v - prev) / n
        out.append(prev)
    return np.array(out)


def _adx_loop(h, low, c, n):
    """§2.2 ADX literally, bar by bar."""
    tr, pdm, mdm = [h[0] - low[0]], [0.0], [0.0]
    for t in range(1, len(c)):
        tr.append(max(h[t] - low[t], abs(h[t] - c[t - 1]), abs(low[t] - c[t - 1])))
        up, dn = h[t] - h[t - 1], low[t - 1] - low[t]
        pdm.append(up if up > dn and up > 0 else 0.0)
        mdm.append(dn if dn > up and dn > 0 else 0.0)
    s_tr, s_p, s_m = (_wilder_loop(x, n) for x in (tr, pdm, mdm))
    pdi = np.where(s_tr == 0, 0, 100 * s_p / np.where(s_tr == 0, 1, s_tr))
    mdi = np.where(s_tr == 0, 0, 100 * s_m / np.where(s_tr == 0, 1, s_tr))
    total = pdi + mdi
    dx = np.where(total == 0, 0, 100 * np.abs(pdi - mdi) / np.where(total == 0, 1, total))
    return _wilder_loop(dx, n), pdi, mdi


def test_adx_hand_checked_first_bars():
    f = frame([9, 11, 10, 12, 11], high=[10, 12, 11, 13, 12], low=[8, 9, 9, 10, 11])
    out = compute_indicator("adx", {"period": 2}, f)
    assert list(out) == ["adx", "plus_di", "minus_di"]
    # t=0: everything 0. t=1: TR 3, +DM 2 -> sTR 2.5, s+DM 1, DI+ 40, DI- 0, DX 100, ADX 50
    close_to([out["adx"][0], out["plus_di"][0], out["minus_di"][0]], [0, 0, 0])
    close_to([out["adx"][1], out["plus_di"][1], out["minus_di"][1]], [50, 40, 0])


def test_adx_matches_spec_loop(random_ohlcv):
    f = random_ohlcv
    out = compute_indicator("adx", {"period": 5}, f)
    adx, pdi, mdi = _adx_loop(f["high"].to_numpy(), f["low"].to_numpy(), f["close"].to_numpy(), 5)
    close_to(out["adx"], adx, rtol=1e-10)
    close_to(out["plus_di"], pdi, rtol=1e-10)
    close_to(out["minus_di"], mdi, rtol=1e-10)


def test_adx_zero_range_gives_zero_not_nan():
    out = compute_indicator("adx", {"period": 2}, frame([5.0] * 6))
    for values in out.values():
        close_to(values, np.zeros(6))


def test_atr_is_simple_mean_of_true_range():
    # TR: 2 (H-L at t=0), max(3, 3, 0) = 3, max(2, 0, 2) = 2
    f = frame([9, 11, 10], high=[10, 12, 11], low=[8, 9, 9])
    close_to(single("atr", {"period": 2}, f), [nan, 2.5, 2.5])


def test_sma_and_ema():
    close_to(single("sma", {"period": 2}, frame([1, 2, 3])), [nan, 1.5, 2.5])
    # span 3 -> alpha 1/2; adjust=True: normalised weights; adjust=False: recursion seeded at x0
    close_to(single("ema", {"period": 3}, frame([1, 2, 3])), [1, 5 / 3, 17 / 7])
    close_to(single("ema", {"period": 3, "adjust": False}, frame([1, 2, 3])), [1, 1.5, 2.25])


def test_stochastic_hand_checked():
    f = frame([1.5, 3, 2, 4], high=[2, 4, 3, 5], low=[1, 2, 1, 3])
    # raw %K: warm-up 50, (3-1)/3, (2-1)/3, (4-1)/4 (x100)
    raw = [50, 200 / 3, 100 / 3, 75]
    out = compute_indicator("stochastic", {"k_period": 2, "smooth_k": 1, "d_period": 2}, f)
    assert list(out) == ["k", "d"]
    close_to(out["k"], raw)
    close_to(out["d"], [50, (raw[0] + raw[1]) / 2, (raw[1] + raw[2]) / 2, (raw[2] + raw[3]) / 2])
    smoothed = compute_indicator("stochastic", {"k_period": 2, "smooth_k": 2, "d_period": 2}, f)
    k = [50, (raw[0] + raw[1]) / 2, (raw[1] + raw[2]) / 2, (raw[2] + raw[3]) / 2]
    close_to(smoothed["k"], k)
    close_to(smoothed["d"], [k[0], (k[0] + k[1]) / 2, (k[1] + k[2]) / 2, (k[2] + k[3]) / 2])


def test_stochastic_and_williams_zero_range_are_neutral():
    f = frame([5.0] * 6)
    out = compute_indicator("stochastic", {"k_period": 2, "smooth_k": 2, "d_period": 2}, f)
    close_to(out["k"], np.full(6, 50.0))
    close_to(single("williamsr", {"period": 3}, f), np.full(6, -50.0))


def test_williamsr_hand_checked():
    f = frame([1.5, 3, 2, 4], high=[2, 4, 3, 5], low=[1, 2, 1, 3])
    close_to(single("williamsr", {"period": 2}, f), [-50, -100 / 3, -200 / 3, -25])


def test_bollinger_bands_and_width():
    f = frame([1, 2, 3, 4])
    out = compute_indicator("bbands", {"period": 3, "multiplier": 2.0}, f)  # sample std of 3 steps = 1
    assert list(out) == ["upper", "middle", "lower"]
    close_to(out["upper"], [nan, nan, 4, 5])
    close_to(out["middle"], [nan, nan, 2, 3])
    close_to(out["lower"], [nan, nan, 0, 1])
    close_to(single("bollingerbandwidth", {"period": 3}, f), [0, 0, 2, 4 / 3])  # warm-up is 0


def test_bollingerbandwidth_zero_middle_is_zero():
    close_to(single("bollingerbandwidth", {"period": 2}, frame([0.0, 0.0, 0.0])), [0, 0, 0])


def test_keltner_channels_hand_checked():
    f = frame([9, 11, 10], high=[10, 12, 11], low=[8, 9, 9])
    out = compute_indicator("keltnerchannels", {"period": 2, "atr_period": 2, "multiplier": 1.0}, f)
    mid = [9, 31 / 3, 91 / 9]  # EWM span 2, adjust=False
    close_to(out["middle"], mid)
    close_to(out["upper"], [nan, mid[1] + 2.5, mid[2] + 2.5])
    close_to(out["lower"], [nan, mid[1] - 2.5, mid[2] - 2.5])


def test_squeeze_intensity_composes_bands_and_keltner(random_ohlcv):
    f = random_ohlcv
    params = {"bb_period": 12, "bb_multiplier": 1.5, "kc_period": 8, "kc_multiplier": 2.5}
    si = single("squeezeintensity", params, f)
    bb = compute_indicator("bollingerbands", {"period": 12, "multiplier": 1.5}, f)
    kc = compute_indicator("keltnerchannels", {"period": 8, "atr_period": 10, "multiplier": 2.5}, f)
    width = kc["upper"] - kc["lower"]
    expected = np.maximum(0, np.minimum((kc["upper"] - bb["upper"]) / width, (bb["lower"] - kc["lower"]) / width))
    # Warm-up: 0 while the Keltner range (ATR 10) is missing, NaN while only the bands are.
    close_to(si[:9], np.zeros(9))
    assert np.isnan(si[9:11]).all()
    close_to(si[11:], expected[11:])
    assert ((si[11:] >= 0) & (si[11:] <= 1)).all()


def test_squeeze_intensity_zero_keltner_range_is_zero():
    close_to(single("squeezeintensity", {}, frame([3.0] * 25)), np.zeros(25))


def test_momentum_cci_volumeratio():
    close_to(single("momentum", {"period": 2}, frame([1, 2, 4, 7])), [nan, nan, 3, 5])
    # TP = close; windows [1,2,3] and [2,3,5]: both give (TP - mean) / (0.015 * MAD) = 100
    close_to(single("cci", {"period": 3}, frame([1, 2, 3, 5])), [nan, nan, 100, 100])
    close_to(single("volumeratio", {"period": 2}, frame([1] * 4, volume=[1, 3, 5, 0])), [1, 1.5, 1.25, 0])
    close_to(single("volumeratio", {"period": 2}, frame([1] * 3, volume=[0, 0, 2])), [1, 1, 2])


def test_distance_from_ma():
    close_to(single("distancefromma", {"period": 2}, frame([1, 3, 3])), [nan, 50, 0])
    # EMA span 2 with adjust=True: 1, 5/2, 37/13
    close_to(single("distancefromma", {"period": 2, "ma_type": "EMA"}, frame([1, 3, 3])), [0, 20, 200 / 37])
    close_to(single("distancefromma", {"period": 1}, frame([0.0, 1.0])), [0, 0])


def test_obv_and_mfi():
    close_to(single("obv", {}, frame([1, 2, 2, 1, 3], volume=[10, 20, 30, 40, 50])), [0, 20, 20, -20, 30])
    # TP changes + + - 0: windows of 2 -> PF 5 NF 0 (100); PF 3 NF 2 (60); PF 0 NF 2 (0)
    close_to(single("mfi", {"period": 2}, frame([1, 2, 3, 2, 2])), [nan, nan, 100, 60, 0])
    close_to(single("mfi", {"period": 2}, frame([1, 2, 1, 2], volume=[0] * 4)), [nan, nan, 100, 100])


def test_mfi_matches_spec_loop(random_ohlcv):
    f, n = random_ohlcv, 6
    tp = ((f["high"] + f["low"] + f["close"]) / 3).to_numpy()
    flow = tp * f["volume"].to_numpy()
    expected = [nan] * n
    for t in range(n, len(tp)):
        pos = sum(flow[i] for i in range(t - n + 1, t + 1) if tp[i] > tp[i - 1])
        neg = sum(flow[i] for i in range(t - n + 1, t + 1) if tp[i] < tp[i - 1])
        expected.append(100.0 if neg == 0 else 0.0 if pos == 0 else 100 - 100 / (1 + pos / neg))
    close_to(single("mfi", {"period": n}, f), expected, rtol=1e-10)


def test_rsi_matches_spec_loop(random_ohlcv):
    close, n = random_ohlcv["close"].to_numpy(), 9
    d = np.diff(close)
    gains, losses = np.maximum(d, 0), np.maximum(-d, 0)
    ag, al = gains[:n].mean(), losses[:n].mean()
    expected = [nan] * n
    for t in range(n, len(close)):
        if t > n:
            ag, al = (ag * (n - 1) + gains[t - 1]) / n, (al * (n - 1) + losses[t - 1]) / n
        expected.append((100.0 if ag > 0 else 50.0) if al == 0 else 100 - 100 / (1 + ag / al))
    close_to(single("rsi", {"period": n}, random_ohlcv), expected, rtol=1e-10)


# --- TA-Lib where the definitions coincide -----------------------------------------------------

def _arrays(f):
    return (f[c].to_numpy(dtype=float) for c in ("high", "low", "close", "volume"))


def _without_tp_ties(values, h, low, c, n=14):
    """NaN where a window holds a typical-price change of float noise (~1e-16): the sign of such a
    'tie' depends on summation order, and TA-Lib's differs from KTRDR's."""
    tp_change = np.diff((h + low + c) / 3, prepend=np.nan)
    tie = pd.Series((np.abs(tp_change) < 1e-12).astype(float)).rolling(n, min_periods=1).max()
    return np.where(tie.to_numpy() > 0, np.nan, values)


def test_matches_talib_exact_definitions(eurusd):
    h, low, c, v = _arrays(eurusd)
    pairs = {
        "rsi": (single("rsi", {"period": 14}, eurusd), talib.RSI(c, 14)),
        "sma": (single("sma", {"period": 20}, eurusd), talib.SMA(c, 20)),
        "roc": (single("roc", {"period": 10}, eurusd), talib.ROC(c, 10)),
        "momentum": (single("momentum", {"period": 10}, eurusd), talib.MOM(c, 10)),
        "williamsr": (single("williamsr", {"period": 14}, eurusd), talib.WILLR(h, low, c, 14)),
        "cci": (single("cci", {"period": 20}, eurusd), talib.CCI(h, low, c, 20)),
        "mfi": (single("mfi", {"period": 14}, eurusd), _without_tp_ties(talib.MFI(h, low, c, v, 14), h, low, c)),
        # TA-Lib's OBV starts at the first volume instead of 0.
        "obv": (single("obv", {}, eurusd), talib.OBV(c, v) - v[0]),
        "atr": (single("atr", {"period": 14}, eurusd)[1:], talib.SMA(talib.TRANGE(h, low, c), 14)[1:]),
    }
    for name, (ours, theirs) in pairs.items():
        valid = ~np.isnan(theirs)
        np.testing.assert_array_equal(np.isnan(ours[valid]), False, err_msg=name)
        np.testing.assert_allclose(ours[valid], theirs[valid], rtol=1e-9, atol=1e-9, err_msg=name)


def test_matches_talib_bands_and_stochastic(eurusd):
    h, low, c, _ = _arrays(eurusd)
    bands = compute_indicator("bollingerbands", {"period": 20, "multiplier": 2.0}, eurusd)
    # TA-Lib uses the population std; scaling the width by sqrt(n/(n-1)) gives the sample std.
    up, mid, lo = talib.BBANDS(c, 20, 2 * math.sqrt(20 / 19), 2 * math.sqrt(20 / 19), 0)
    for ours, theirs in zip((bands["upper"], bands["middle"], bands["lower"]), (up, mid, lo), strict=True):
        np.testing.assert_allclose(ours[19:], theirs[19:], rtol=1e-9)
    stoch = compute_indicator("stochastic", {"k_period": 14, "smooth_k": 3, "d_period": 3}, eurusd)
    slowk, slowd = talib.STOCH(h, low, c, 14, 3, 0, 3, 0)
    valid = ~np.isnan(slowd)
    np.testing.assert_allclose(stoch["k"][valid], slowk[valid], rtol=1e-9)
    np.testing.assert_allclose(stoch["d"][valid], slowd[valid], rtol=1e-9)


def test_matches_talib_after_seed_has_decayed(eurusd):
    # TA-Lib seeds EMAs and Wilder sums with an SMA; KTRDR does not. The difference decays
    # geometrically, so the tails agree.
    h, low, c, _ = _arrays(eurusd)
    tail = slice(1500, None)
    macd = compute_indicator("macd", {}, eurusd)
    line, signal, hist = talib.MACD(c, 12, 26, 9)
    np.testing.assert_allclose(macd["line"][tail], line[tail], rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(macd["signal"][tail], signal[tail], rtol=1e-7, atol=1e-12)
    for adjust in (True, False):
        ema = single("ema", {"period": 20, "adjust": adjust}, eurusd)
        np.testing.assert_allclose(ema[tail], talib.EMA(c, 20)[tail], rtol=1e-10)
    adx = compute_indicator("adx", {"period": 14}, eurusd)
    np.testing.assert_allclose(adx["adx"][tail], talib.ADX(h, low, c, 14)[tail], rtol=1e-7)
    np.testing.assert_allclose(adx["plus_di"][tail], talib.PLUS_DI(h, low, c, 14)[tail], rtol=1e-7)
    np.testing.assert_allclose(adx["minus_di"][tail], talib.MINUS_DI(h, low, c, 14)[tail], rtol=1e-7)


# --- engine semantics and errors ---------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_indicator_returns_float64_of_frame_length(name, eurusd):
    out = compute_indicator(name, {}, eurusd.iloc[:400])
    spec = SPECS[name]
    assert list(out) == (list(spec.outputs) or [""])
    for values in out.values():
        assert values.dtype == np.float64 and values.shape == (400,)
        assert not np.isnan(values[-300:]).any()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_too_few_rows_is_a_data_error(name, eurusd):
    spec = SPECS[name]
    defaults = {k: p.default for k, p in spec.params.items()}
    need = spec.min_rows(defaults)
    compute_indicator(name, {}, eurusd.iloc[:need])
    with pytest.raises(DataError, match=f"at least {need} rows"):
        compute_indicator(name, {}, eurusd.iloc[: need - 1])


def test_type_lookup_is_case_insensitive_with_aliases(eurusd):
    f = eurusd.iloc[:100]
    rsi = single("rsi", {}, f)
    np.testing.assert_array_equal(single("RSI", {}, f), rsi)
    np.testing.assert_array_equal(single("RSIIndicator", {}, f), rsi)
    bb = compute_indicator("bollingerbands", {}, f)
    np.testing.assert_array_equal(compute_indicator("BBands", {}, f)["upper"], bb["upper"])


def test_unknown_params_are_ignored_and_source_is_honoured(eurusd):
    f = eurusd.iloc[:100]
    np.testing.assert_array_equal(single("rsi", {"period": 14, "foo": 1}, f), single("rsi", {}, f))
    on_open = single("sma", {"period": 5, "source": "open"}, f)
    np.testing.assert_allclose(on_open[4:], f["open"].rolling(5).mean().to_numpy()[4:], rtol=1e-12)


def test_missing_source_column_is_a_data_error(eurusd):
    with pytest.raises(DataError, match="open"):
        compute_indicator("sma", {"source": "open"}, eurusd[["high", "low", "close", "volume"]])
    with pytest.raises(DataError, match="volume"):
        compute_indicator("obv", {}, eurusd[["open", "high", "low", "close"]])


def test_unknown_type_and_bad_params_are_strategy_errors(eurusd):
    with pytest.raises(StrategyError, match="Unknown indicator type 'wma'"):
        compute_indicator("wma", {}, eurusd)
    with pytest.raises(StrategyError, match="rsi.period must be an integer"):
        compute_indicator("rsi", {"period": 14.0}, eurusd)


def test_indicator_columns_names_and_aliases(eurusd):
    f = eurusd.iloc[:100]
    resolved = {"rsi_14": ("rsi", SPECS["rsi"].resolve({"period": 14}).params),
                "bb": ("bollingerbands", SPECS["bollingerbands"].resolve({"period": 10}).params)}
    cols = indicator_columns(resolved, f, "1h")
    assert list(cols.columns) == ["1h_rsi_14", "1h_bb.upper", "1h_bb.middle", "1h_bb.lower", "1h_bb"]
    assert cols.index.equals(f.index)
    np.testing.assert_array_equal(cols["1h_bb"].to_numpy(), cols["1h_bb.upper"].to_numpy())
    assert cols["1h_rsi_14"].isna().sum() == 14
