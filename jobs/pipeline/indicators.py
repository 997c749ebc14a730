"""The 19 supported indicators, vectorised, matching KTRDR's formulas (docs/ktrdr-semantics.md §2).

Rolling windows go through pandas, as in KTRDR; exponential smoothing and the indicators built on
it (RSI, ADX, MACD) run as compiled loops (kernels.py) that repeat pandas' arithmetic step for
step, so the numerics agree with KTRDR's to rounding. Every function takes the resolved parameters
and the OHLCV frame and returns output name -> float64 array ("" for a single-output indicator).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from trainhost.jobs.pipeline import kernels
from trainhost.jobs.pipeline.errors import DataError, StrategyError
from trainhost.jobs.pipeline.indicator_specs import IndicatorSpec, lookup, supported_types

Outputs = dict[str, np.ndarray]

# Columns each indicator reads besides its `source` parameter.
_OHLC = ("high", "low", "close")
_COLUMNS: dict[str, tuple[str, ...]] = {
    "adx": _OHLC, "atr": _OHLC, "stochastic": _OHLC, "williamsr": _OHLC, "keltnerchannels": _OHLC,
    "squeezeintensity": _OHLC, "cci": _OHLC, "volumeratio": ("volume",), "obv": ("close", "volume"),
    "mfi": (*_OHLC, "volume"),
}


def compute_indicator(type_name: str, params: Mapping[str, Any], frame: pd.DataFrame) -> Outputs:
    """Compute one indicator on `frame` (lower-case OHLCV columns) with parameters as a strategy
    writes them, resolved by `IndicatorSpec.resolve` (defaults, aliases; unknown keys ignored).
    Returns output name -> float64 array of len(frame).
    """
    spec = _spec(type_name)
    resolution = spec.resolve(params)
    if resolution.errors:
        raise StrategyError([f"{spec.name}.{key} {message}" for key, message in resolution.errors.items()])
    return _compute(spec, resolution.params, frame)


def indicator_columns(
    indicators: Mapping[str, tuple[str, Mapping[str, Any]]], frame: pd.DataFrame, timeframe: str
) -> pd.DataFrame:
    """All indicator columns for one timeframe, named as KTRDR names them (§2.1), NaN kept.

    `indicators`: id -> (type, params) as the strategy parser resolved them (IndicatorDef).
    Single output: `{tf}_{id}`; multi-output: `{tf}_{id}.{output}` for each output, then the
    alias `{tf}_{id}` holding the primary (first) output.
    """
    return pd.DataFrame(indicator_arrays(indicators, frame, timeframe), index=frame.index)


def indicator_arrays(
    indicators: Mapping[str, tuple[str, Mapping[str, Any]]], frame: pd.DataFrame, timeframe: str
) -> dict[str, np.ndarray]:
    """The columns of `indicator_columns` as arrays by name, without building a frame (a copy)."""
    columns: dict[str, np.ndarray] = {}
    for indicator_id, (type_name, params) in indicators.items():
        outputs = _compute(_spec(type_name), params, frame)
        base = f"{timeframe}_{indicator_id}"
        if "" in outputs:
            columns[base] = outputs[""]
            continue
        for name, values in outputs.items():
            columns[f"{base}.{name}"] = values
        columns[base] = next(iter(outputs.values()))
    return columns


def _spec(type_name: str) -> IndicatorSpec:
    spec = lookup(type_name)
    if spec is None:
        available = ", ".join(supported_types())
        raise StrategyError([f"Unknown indicator type '{type_name}'. Available: {available}"])
    return spec


def _compute(spec: IndicatorSpec, p: Mapping[str, Any], frame: pd.DataFrame) -> Outputs:
    """One indicator with resolved parameters `p`; DataError when `frame` lacks a column or rows."""
    needed = [p["source"]] if "source" in p else []
    needed += [c for c in _COLUMNS.get(spec.name, ()) if c not in needed]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{spec.name}: column(s) {missing} not in the data (columns: {list(frame.columns)})")
    min_rows = spec.min_rows(p)
    if len(frame) < min_rows:
        raise DataError(f"{spec.name} needs at least {min_rows} rows of data, got {len(frame)}")
    out = _FORMULAS[spec.name](p, _Columns(frame, needed))
    return {name: np.asarray(values, dtype=np.float64) for name, values in out.items()}


class _Columns(Mapping[str, pd.Series]):
    """An indicator's input columns as float64: arrays (`array`) for the compiled formulas, and
    Series on a RangeIndex, as KTRDR computes on, built on first use for the pandas-based ones
    (building three Series took longer than the whole compiled ADX at 10k bars)."""

    def __init__(self, frame: pd.DataFrame, names: Iterable[str]):
        self._arrays = {c: kernels.as_input(frame[c].to_numpy(dtype=np.float64)) for c in names}
        self._series: dict[str, pd.Series] = {}

    def array(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __getitem__(self, name: str) -> pd.Series:
        if name not in self._series:
            self._series[name] = pd.Series(self._arrays[name], copy=False)
        return self._series[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)


# --- building blocks --------------------------------------------------------------------------

def _sma(s: pd.Series, n: int) -> pd.Series:
    return s.rolling(n, min_periods=n).mean()


def _ewm(x: np.ndarray, span: int, adjust: bool = False) -> np.ndarray:
    """Series(x).ewm(span=span, adjust=adjust).mean()."""
    out = np.empty(len(x))
    kernels.ewm_mean(x, kernels.com_from_span(span), bool(adjust), out)
    return out


def _true_range(d: _Columns) -> pd.Series:
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


def _keltner(d: _Columns, period: int, atr_period: int,
             multiplier: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mid = _ewm(d.array("close"), period)
    atr = _sma(_true_range(d), atr_period).to_numpy()  # simple mean of TR, as KTRDR's ATR
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

def _rsi(p: dict, d: _Columns) -> Outputs:
    n = p["period"]
    source = d.array(p["source"])
    # Seeds: the means of the first n changes at t = n (numpy's pairwise mean, as before), then
    # Wilder's recursion in the kernel.
    head = np.diff(source[:n + 1])
    seed_gain, seed_loss = np.maximum(head, 0.0).mean(), np.maximum(-head, 0.0).mean()
    rsi = np.empty(len(source))
    kernels.rsi(source, n, seed_gain, seed_loss, kernels.com_from_alpha(1.0 / n), rsi)
    return {"": rsi}


def _roc(p: dict, d: _Columns) -> Outputs:
    source = d.array(p["source"])
    roc = np.empty(len(source))
    kernels.roc(source, p["period"], roc)
    return {"": roc}


def _macd(p: dict, d: _Columns) -> Outputs:
    source = d.array(p["source"])
    coms = (kernels.com_from_span(p[k]) for k in ("fast_period", "slow_period", "signal_period"))
    out = {name: np.empty(len(source)) for name in ("line", "signal", "histogram")}
    kernels.macd(source, *coms, *out.values())
    return out


def _adx(p: dict, d: _Columns) -> Outputs:
    high, low, close = (d.array(c) for c in _OHLC)
    out = {name: np.empty(len(close)) for name in ("adx", "plus_di", "minus_di")}
    kernels.adx(high, low, close, kernels.com_from_alpha(1.0 / p["period"]), *out.values())
    return out


def _atr(p: dict, d: _Columns) -> Outputs:
    return {"": _sma(_true_range(d), p["period"])}


def _sma_indicator(p: dict, d: _Columns) -> Outputs:
    return {"": _sma(d[p["source"]], p["period"])}


def _ema(p: dict, d: _Columns) -> Outputs:
    return {"": _ewm(d.array(p["source"]), p["period"], adjust=p["adjust"])}


def _stochastic(p: dict, d: _Columns) -> Outputs:
    k = p["k_period"]
    highest = d["high"].rolling(k, min_periods=k).max()
    lowest = d["low"].rolling(k, min_periods=k).min()
    raw = ((d["close"] - lowest) / (highest - lowest) * 100).fillna(50.0)  # warm-up, zero range
    k_line = raw.rolling(p["smooth_k"], min_periods=1).mean() if p["smooth_k"] > 1 else raw
    return {"k": k_line, "d": k_line.rolling(p["d_period"], min_periods=1).mean()}


def _williamsr(p: dict, d: _Columns) -> Outputs:
    n = p["period"]
    highest = d["high"].rolling(n, min_periods=n).max()
    lowest = d["low"].rolling(n, min_periods=n).min()
    return {"": (-100 * (highest - d["close"]) / (highest - lowest)).fillna(-50.0)}


def _bollingerbands(p: dict, d: _Columns) -> Outputs:
    upper, middle, lower = _bands(d[p["source"]], p["period"], p["multiplier"])
    return {"upper": upper, "middle": middle, "lower": lower}


def _bollingerbandwidth(p: dict, d: _Columns) -> Outputs:
    upper, middle, lower = (s.to_numpy() for s in _bands(d[p["source"]], p["period"], p["multiplier"]))
    # NaN compares False, so warm-up rows are 0 like KTRDR's.
    return {"": _safe_ratio(upper - lower, middle, np.abs(middle) > 1e-10, 0.0)}


def _keltnerchannels(p: dict, d: _Columns) -> Outputs:
    upper, middle, lower = _keltner(d, p["period"], p["atr_period"], p["multiplier"])
    return {"upper": upper, "middle": middle, "lower": lower}


def _squeezeintensity(p: dict, d: _Columns) -> Outputs:
    bb_upper, _, bb_lower = (s.to_numpy() for s in _bands(d[p["source"]], p["bb_period"], p["bb_multiplier"]))
    # KTRDR builds the Keltner part with its default atr_period of 10 and always on close.
    kc_upper, _, kc_lower = _keltner(d, p["kc_period"], 10, p["kc_multiplier"])
    width = kc_upper - kc_lower
    ok = np.abs(width) > 1e-10
    squeeze = np.maximum(0.0, np.minimum(_safe_ratio(kc_upper - bb_upper, width, ok, 0.0),
                                         _safe_ratio(bb_lower - kc_lower, width, ok, 0.0)))
    return {"": squeeze}


def _momentum(p: dict, d: _Columns) -> Outputs:
    src = d[p["source"]]
    return {"": src - src.shift(p["period"])}


def _cci(p: dict, d: _Columns) -> Outputs:
    n = p["period"]
    tp = ((d["high"] + d["low"] + d["close"]) / 3).to_numpy()
    mean = _sma(pd.Series(tp), n).to_numpy()
    # Mean deviation about the window's own SMA_t, as KTRDR computes it per window.
    mad = _over_windows(tp, n, lambda w, rows: np.abs(w - mean[rows, None]).mean(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"": (tp - mean) / (0.015 * mad)}


def _volumeratio(p: dict, d: _Columns) -> Outputs:
    volume = d["volume"].to_numpy()
    mean = _sma(d["volume"], p["period"]).to_numpy()
    return {"": _safe_ratio(volume, mean, mean > 1e-10, 1.0)}  # NaN compares False -> 1.0


def _distancefromma(p: dict, d: _Columns) -> Outputs:
    values = d.array(p["source"])
    if p["ma_type"].upper() == "SMA":
        ma = _sma(d[p["source"]], p["period"]).to_numpy()
    else:  # KTRDR's EMA here is its EMA indicator with default adjust=True.
        ma = _ewm(values, p["period"], True)
    dist = _safe_ratio((values - ma) * 100, ma, np.abs(ma) > 1e-10, 0.0)
    dist[np.isnan(ma)] = np.nan
    return {"": dist}


def _obv(p: dict, d: _Columns) -> Outputs:
    direction = np.sign(d["close"].diff().fillna(0.0).to_numpy())
    return {"": np.cumsum(direction * d["volume"].to_numpy())}


def _mfi(p: dict, d: _Columns) -> Outputs:
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


_FORMULAS: dict[str, Callable[[dict, _Columns], Outputs]] = {
    "rsi": _rsi, "roc": _roc, "macd": _macd, "adx": _adx, "atr": _atr, "sma": _sma_indicator,
    "ema": _ema, "stochastic": _stochastic, "williamsr": _williamsr, "bollingerbands": _bollingerbands,
    "bollingerbandwidth": _bollingerbandwidth, "keltnerchannels": _keltnerchannels,
    "squeezeintensity": _squeezeintensity, "momentum": _momentum, "cci": _cci,
    "volumeratio": _volumeratio, "distancefromma": _distancefromma, "obv": _obv, "mfi": _mfi,
}
