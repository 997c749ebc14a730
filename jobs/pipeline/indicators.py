"""The 19 supported indicators, vectorised, matching KTRDR's formulas (KTRDR-PIPELINE.md §2).

Rolling windows and exponential smoothing go through pandas, as in KTRDR, so the numerics agree
to rounding. Every function takes the resolved parameters and the OHLCV frame and returns
output name -> float64 array ("" for a single-output indicator).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from jobs.pipeline.errors import DataError, StrategyError
from jobs.pipeline.indicator_specs import IndicatorSpec, lookup, supported_types

Outputs = dict[str, np.ndarray]

# Columns each indicator reads besides its `source` parameter.
_OHLC = ("high", "low", "close")
_COLUMNS: dict[str, tuple[str, ...]] = {
    "adx": _OHLC, "atr": _OHLC, "stochastic": _OHLC, "williamsr": _OHLC, "keltnerchannels": _OHLC,
    "squeezeintensity": _OHLC, "cci": _OHLC, "volumeratio": ("volume",), "obv": ("close", "volume"),
    "mfi": (*_OHLC, "volume"),
}


def compute_indicator(type_name: str, params: Mapping[str, Any], frame: pd.DataFrame) -> Outputs:
    """Compute one indicator on `frame` (lower-case OHLCV columns) as a strategy writes it.

    Missing parameters take the spec's defaults, MACD's fast/slow/signal aliases are honoured and
    unknown keys are ignored. Returns output name -> float64 array of len(frame).
    """
    spec = lookup(type_name)
    if spec is None:
        available = ", ".join(supported_types())
        raise StrategyError([f"Unknown indicator type '{type_name}'. Available: {available}"])
    p = _resolve_params(spec, params)
    needed = [p["source"]] if "source" in p else []
    needed += [c for c in _COLUMNS.get(spec.name, ()) if c not in needed]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{spec.name}: column(s) {missing} not in the data (columns: {list(frame.columns)})")
    min_rows = spec.min_rows(p)
    if len(frame) < min_rows:
        raise DataError(f"{spec.name} needs at least {min_rows} rows of data, got {len(frame)}")
    data = {c: frame[c].astype(np.float64).reset_index(drop=True) for c in needed}
    out = _FORMULAS[spec.name](p, data)
    return {name: np.asarray(values, dtype=np.float64) for name, values in out.items()}


def indicator_columns(
    indicators: Mapping[str, tuple[str, Mapping[str, Any]]], frame: pd.DataFrame, timeframe: str
) -> pd.DataFrame:
    """All indicator columns for one timeframe, named as KTRDR names them (§2.1), NaN kept.

    Single output: `{tf}_{id}`; multi-output: `{tf}_{id}.{output}` for each output, then the
    alias `{tf}_{id}` holding the primary (first) output.
    """
    columns: dict[str, np.ndarray] = {}
    for indicator_id, (type_name, params) in indicators.items():
        outputs = compute_indicator(type_name, params, frame)
        base = f"{timeframe}_{indicator_id}"
        if "" in outputs:
            columns[base] = outputs[""]
            continue
        for name, values in outputs.items():
            columns[f"{base}.{name}"] = values
        columns[base] = next(iter(outputs.values()))
    return pd.DataFrame(columns, index=frame.index)


def _resolve_params(spec: IndicatorSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults, overridden by aliases, overridden by canonical names; each value checked."""
    given = dict(given)
    for alias, name in spec.param_aliases.items():
        if alias in given and name not in given:
            given[name] = given[alias]
    resolved: dict[str, Any] = {}
    problems = []
    for name, param in spec.params.items():
        value = given.get(name, param.default)
        problem = param.check(value)
        if problem:
            problems.append(f"{spec.name}.{name} {problem}")
        resolved[name] = value
    if problems:
        raise StrategyError(problems)
    if "source" in resolved:
        resolved["source"] = resolved["source"].lower()
    return resolved


# --- building blocks --------------------------------------------------------------------------

def _sma(s: pd.Series, n: int) -> pd.Series:
    return s.rolling(n, min_periods=n).mean()


def _ewm(s: pd.Series, span: int, adjust: bool = False) -> pd.Series:
    return s.ewm(span=span, adjust=adjust).mean()


def _wilder(s: pd.Series, n: int) -> pd.Series:
    return s.ewm(alpha=1.0 / n, adjust=False).mean()


def _true_range(d: Mapping[str, pd.Series]) -> pd.Series:
    """max(H-L, |H-C_prev|, |L-C_prev|), with TR_0 = H_0 - L_0 (fmax skips the missing C_prev)."""
    high, low = d["high"].to_numpy(), d["low"].to_numpy()
    prev_close = d["close"].shift(1).to_numpy()
    tr = np.fmax(high - low, np.fmax(np.abs(high - prev_close), np.abs(low - prev_close)))
    return pd.Series(tr)


def _safe_ratio(num: np.ndarray, den: np.ndarray, ok: np.ndarray, fill: float) -> np.ndarray:
    """num/den where `ok`, else `fill`, without division warnings."""
    out = np.full(np.shape(num), fill, dtype=np.float64)
    np.divide(num, den, out=out, where=ok)
    return out


def _bands(source: pd.Series, period: int, multiplier: float) -> tuple[pd.Series, pd.Series, pd.Series]:
    mid = _sma(source, period)
    sd = source.rolling(period, min_periods=period).std()  # sample std (ddof 1)
    return mid + multiplier * sd, mid, mid - multiplier * sd


def _keltner(d: Mapping[str, pd.Series], period: int, atr_period: int,
             multiplier: float) -> tuple[pd.Series, pd.Series, pd.Series]:
    mid = _ewm(d["close"], period)
    atr = _sma(_true_range(d), atr_period)  # simple mean of TR, as KTRDR's ATR
    return mid + multiplier * atr, mid, mid - multiplier * atr


def _over_windows(x: np.ndarray, n: int,
                  reduce: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """reduce(windows, end_rows) over each trailing window of n values; NaN for the first n-1 rows.

    Works in chunks so memory stays near 2M floats whatever the length.
    """
    out = np.full(len(x), np.nan)
    windows = sliding_window_view(x, n)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, len(windows), chunk):
        rows = np.arange(start + n - 1, min(start + chunk, len(windows)) + n - 1)
        out[rows] = reduce(windows[start:start + chunk], rows)
    return out


# --- the indicators ---------------------------------------------------------------------------

def _rsi(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    n = p["period"]
    diff = d[p["source"]].diff().to_numpy()
    gain, loss = np.maximum(diff, 0.0), np.maximum(-diff, 0.0)

    def smoothed(x: np.ndarray) -> np.ndarray:
        # Seed with the mean of the first n changes at t = n, then Wilder's recursion.
        seeded = x[n:].copy()
        seeded[0] = x[1:n + 1].mean()
        out = np.full(len(x), np.nan)
        out[n:] = pd.Series(seeded).ewm(alpha=1.0 / n, adjust=False).mean().to_numpy()
        return out

    avg_gain, avg_loss = smoothed(gain), smoothed(loss)
    rs = _safe_ratio(avg_gain, avg_loss, avg_loss != 0, np.nan)
    rsi = 100.0 - 100.0 / (1.0 + rs)
    rsi = np.where(avg_loss == 0, np.where(avg_gain > 0, 100.0, 50.0), rsi)
    rsi[:n] = np.nan
    return {"": rsi}


def _roc(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    src = d[p["source"]]
    prev = src.shift(p["period"])
    with np.errstate(divide="ignore", invalid="ignore"):
        roc = ((src - prev) / prev * 100).to_numpy()
    return {"": np.where(np.isfinite(roc), roc, np.nan)}


def _macd(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    src = d[p["source"]]
    line = _ewm(src, p["fast_period"]) - _ewm(src, p["slow_period"])
    signal = _ewm(line, p["signal_period"])
    return {"line": line, "signal": signal, "histogram": line - signal}


def _adx(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    n = p["period"]
    high, low = d["high"].to_numpy(), d["low"].to_numpy()
    up = np.diff(high, prepend=np.nan)
    dn = -np.diff(low, prepend=np.nan)
    # NaN comparisons are False, so both DMs are 0 at t = 0.
    plus_dm = pd.Series(np.where((up > dn) & (up > 0), up, 0.0))
    minus_dm = pd.Series(np.where((dn > up) & (dn > 0), dn, 0.0))
    tr = _wilder(_true_range(d), n).to_numpy()
    plus_di = _safe_ratio(100 * _wilder(plus_dm, n).to_numpy(), tr, tr != 0, 0.0)
    minus_di = _safe_ratio(100 * _wilder(minus_dm, n).to_numpy(), tr, tr != 0, 0.0)
    di_sum = plus_di + minus_di
    dx = _safe_ratio(100 * np.abs(plus_di - minus_di), di_sum, di_sum != 0, 0.0)
    return {"adx": _wilder(pd.Series(dx), n), "plus_di": plus_di, "minus_di": minus_di}


def _atr(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    return {"": _sma(_true_range(d), p["period"])}


def _sma_indicator(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    return {"": _sma(d[p["source"]], p["period"])}


def _ema(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    return {"": _ewm(d[p["source"]], p["period"], adjust=p["adjust"])}


def _stochastic(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    k = p["k_period"]
    highest = d["high"].rolling(k, min_periods=k).max()
    lowest = d["low"].rolling(k, min_periods=k).min()
    raw = ((d["close"] - lowest) / (highest - lowest) * 100).fillna(50.0)  # warm-up, zero range
    k_line = raw.rolling(p["smooth_k"], min_periods=1).mean() if p["smooth_k"] > 1 else raw
    return {"k": k_line, "d": k_line.rolling(p["d_period"], min_periods=1).mean()}


def _williamsr(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    n = p["period"]
    highest = d["high"].rolling(n, min_periods=n).max()
    lowest = d["low"].rolling(n, min_periods=n).min()
    return {"": (-100 * (highest - d["close"]) / (highest - lowest)).fillna(-50.0)}


def _bollingerbands(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    upper, middle, lower = _bands(d[p["source"]], p["period"], p["multiplier"])
    return {"upper": upper, "middle": middle, "lower": lower}


def _bollingerbandwidth(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    upper, middle, lower = (s.to_numpy() for s in _bands(d[p["source"]], p["period"], p["multiplier"]))
    # NaN compares False, so warm-up rows are 0 like KTRDR's.
    return {"": _safe_ratio(upper - lower, middle, np.abs(middle) > 1e-10, 0.0)}


def _keltnerchannels(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    upper, middle, lower = _keltner(d, p["period"], p["atr_period"], p["multiplier"])
    return {"upper": upper, "middle": middle, "lower": lower}


def _squeezeintensity(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    bb_upper, _, bb_lower = (s.to_numpy() for s in _bands(d[p["source"]], p["bb_period"], p["bb_multiplier"]))
    # KTRDR builds the Keltner part with its default atr_period of 10 and always on close.
    kc_upper, _, kc_lower = (s.to_numpy() for s in _keltner(d, p["kc_period"], 10, p["kc_multiplier"]))
    width = kc_upper - kc_lower
    ok = np.abs(width) > 1e-10
    squeeze = np.maximum(0.0, np.minimum(_safe_ratio(kc_upper - bb_upper, width, ok, 0.0),
                                         _safe_ratio(bb_lower - kc_lower, width, ok, 0.0)))
    return {"": squeeze}


def _momentum(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    src = d[p["source"]]
    return {"": src - src.shift(p["period"])}


def _cci(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    n = p["period"]
    tp = ((d["high"] + d["low"] + d["close"]) / 3).to_numpy()
    mean = _sma(pd.Series(tp), n).to_numpy()
    # Mean deviation about the window's own SMA_t, as KTRDR computes it per window.
    mad = _over_windows(tp, n, lambda w, rows: np.abs(w - mean[rows, None]).mean(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"": (tp - mean) / (0.015 * mad)}


def _volumeratio(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    volume = d["volume"].to_numpy()
    mean = _sma(d["volume"], p["period"]).to_numpy()
    return {"": _safe_ratio(volume, mean, mean > 1e-10, 1.0)}  # NaN compares False -> 1.0


def _distancefromma(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    src = d[p["source"]]
    # KTRDR's EMA here is its EMA indicator with default adjust=True.
    ma_series = _sma(src, p["period"]) if p["ma_type"].upper() == "SMA" else _ewm(src, p["period"], True)
    ma = ma_series.to_numpy()
    dist = _safe_ratio((src.to_numpy() - ma) * 100, ma, np.abs(ma) > 1e-10, 0.0)
    dist[np.isnan(ma)] = np.nan
    return {"": dist}


def _obv(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    direction = np.sign(d["close"].diff().fillna(0.0).to_numpy())
    return {"": np.cumsum(direction * d["volume"].to_numpy())}


def _mfi(p: dict, d: Mapping[str, pd.Series]) -> Outputs:
    n = p["period"]
    tp = (d["high"] + d["low"] + d["close"]) / 3.0
    flow = (tp * d["volume"]).to_numpy()
    change = tp.diff().to_numpy()
    up, down = change > 0, change < 0  # NaN change at t = 0 counts as neither

    def window_sum(mask: np.ndarray) -> np.ndarray:
        # Summed per window (not a running sum) so a window without flows is exactly 0.
        flows = np.where(mask, flow, 0.0)
        return _over_windows(flows, n, lambda w, rows: w.sum(axis=1))

    pos, neg = window_sum(up), window_sum(down)
    ratio = _safe_ratio(pos, neg, neg != 0, np.nan)
    mfi = np.where(neg == 0, 100.0, np.where(pos == 0, 0.0, 100.0 - 100.0 / (1.0 + ratio)))
    mfi[:n] = np.nan
    return {"": mfi}


_FORMULAS: dict[str, Callable[[dict, Mapping[str, pd.Series]], Outputs]] = {
    "rsi": _rsi, "roc": _roc, "macd": _macd, "adx": _adx, "atr": _atr, "sma": _sma_indicator,
    "ema": _ema, "stochastic": _stochastic, "williamsr": _williamsr, "bollingerbands": _bollingerbands,
    "bollingerbandwidth": _bollingerbandwidth, "keltnerchannels": _keltnerchannels,
    "squeezeintensity": _squeezeintensity, "momentum": _momentum, "cci": _cci,
    "volumeratio": _volumeratio, "distancefromma": _distancefromma, "obv": _obv, "mfi": _mfi,
}
