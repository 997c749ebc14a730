"""Labels, as KTRDR's labelers make them (docs/ktrdr-semantics.md §6): zigzag segments, triple barrier
(with CUSUM events and uniqueness weights), forward returns, context classes and multi-scale regimes.

Every labeler takes one symbol's base-timeframe bars and returns one value per bar; `make_labels`
puts them in one shape: float targets with NaN where a bar has no label (the tail a forward-looking
label cannot see, non-event bars, bars after the last regime pivot), plus holding periods for the
triple barrier. Where KTRDR drops the tail (triple barrier, forward return) we keep the bar and
leave it NaN, so labels stay aligned with features by position and timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from trainhost.jobs.pipeline import kernels
from trainhost.jobs.pipeline.errors import DataError
from trainhost.jobs.pipeline.label_specs import CLASS_NAMES

BUY, HOLD, SELL = 0, 1, 2  # indices of label_specs.SIGNAL_CLASSES
BULLISH, BEARISH, NEUTRAL = 0, 1, 2
TRENDING_UP, TRENDING_DOWN, RANGING, VOLATILE = 0, 1, 2, 3


def zigzag_pivots(close: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the zigzag pivots of `close` (always starting with 0), ascending."""
    if not 0 < threshold < 1:
        raise ValueError(f"zigzag_threshold must be > 0 and < 1, got {threshold!r}")
    arr = kernels.as_input(close)
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    # min > 0 and max < inf: finite and positive in two reductions (a NaN makes min NaN).
    if not (arr.min() > 0 and arr.max() < np.inf):
        raise ValueError("zigzag labels need finite, positive close prices")
    # The walk (kernels.zigzag_pivots): until the first move of `threshold` from bar 0 the reference
    # stays at bar 0; then the last pivot is always the running extreme: a new extreme replaces it,
    # a reversal of at least `threshold` from it adds one. The relative move is computed as KTRDR
    # computes it, so ties at the threshold agree.
    return kernels.zigzag_pivots(arr, float(threshold))


def zigzag_labels(close: np.ndarray, threshold: float) -> np.ndarray:
    """One zigzag segment label per bar (int64: BUY=0, HOLD=1, SELL=2), as KTRDR makes them."""
    prices = kernels.as_input(close)
    return segment_labels(prices, zigzag_pivots(prices, threshold))


def segment_labels(close: np.ndarray, pivots: np.ndarray) -> np.ndarray:
    """Bars strictly between consecutive pivots take that segment's direction: BUY when the later
    pivot's price is higher, otherwise SELL (a tie is SELL). Pivot bars, bars outside the pivots
    and every bar when there are fewer than two pivots are HOLD."""
    prices = kernels.as_input(close)
    pivots = np.ascontiguousarray(pivots, dtype=np.int64)
    if len(pivots) and not (0 <= pivots.min() and pivots.max() < len(prices)):  # the kernel does not check
        raise IndexError(f"pivots out of range for {len(prices)} bars")
    labels = np.empty(len(prices), dtype=np.int64)
    kernels.segment_labels(prices, pivots, BUY, HOLD, SELL, labels)
    return labels


# --------------------------------------------------------------------------------------------
# Triple barrier (§6.2)
# --------------------------------------------------------------------------------------------


def barrier_volatility(high: np.ndarray, low: np.ndarray, close: np.ndarray, vol_span: int,
                       vol_method: str = "atr") -> np.ndarray:
    """σ_t: `atr` = EWM(span, adjust=True) of (H-L)/C; `close` = EWM-std(span) of log returns (σ_0 NaN).
    Early NaN or zero values (t < min(span, N-1)) take σ at that index, as KTRDR fills them."""
    if vol_method == "atr":
        vol = np.subtract(high, low)
        np.divide(vol, close, out=vol)
        kernels.ewm_mean(vol, kernels.com_from_span(vol_span), True, vol)  # in place: reads x[i] before writing it
    else:
        vol = np.empty(len(close), dtype=np.float64)
        vol[0] = np.nan
        vol[1:] = pd.Series(np.diff(np.log(close))).ewm(span=vol_span).std().to_numpy()
    first_valid = min(vol_span, len(vol) - 1)
    early = vol[:first_valid]
    early[np.isnan(early) | (early == 0)] = vol[first_valid]
    return vol


def triple_barrier_labels(high: np.ndarray, low: np.ndarray, close: np.ndarray, *, pt_multiplier: float = 2.0,
                          sl_multiplier: float = 1.5, max_holding_period: int = 50, vol_span: int = 50,
                          vol_method: str = "atr") -> tuple[np.ndarray, np.ndarray]:
    """(raw labels +1/0/-1, holding periods), one per bar t < N - h (the last h bars have none).

    Barriers upper = C_t(1 + pt·σ_t), lower = C_t(1 - sl·σ_t) are checked against H/L of bars
    t+1..t+h; the first bar touching one decides (both: +1 if its close >= C_t, else -1). Untouched:
    0 when |C_{t+h}/C_t - 1| < σ_t·√h/2, else the sign of that return; holding period h.
    """
    raw, holds = _barrier_outcomes(high, low, close, pt_multiplier, sl_multiplier, max_holding_period, vol_span,
                                   vol_method)
    m = len(raw) - max_holding_period
    return raw[:m].astype(np.int64), holds[:m]


def _barrier_outcomes(high: np.ndarray, low: np.ndarray, close: np.ndarray, pt_multiplier: float,
                      sl_multiplier: float, max_holding_period: int, vol_span: int,
                      vol_method: str) -> tuple[np.ndarray, np.ndarray]:
    """`triple_barrier_labels` as N-bar arrays (raw labels as float64, holding periods), NaN and 0
    for the last h bars, which have none: make_labels takes them as they are, without copies."""
    high, low, close = (kernels.as_input(a) for a in (high, low, close))
    h, n = max_holding_period, len(close)
    if not len(high) == len(low) == n:  # the kernel does not check
        raise ValueError(f"high, low and close differ in length: {len(high)}, {len(low)}, {n}")
    if n < h + vol_span:
        raise DataError(f"triple_barrier labels need at least max_holding_period + vol_span = {h + vol_span} bars, "
                        f"got {n}")
    vol = barrier_volatility(high, low, close, vol_span, vol_method)
    raw, holds = np.empty(n), np.empty(n, dtype=np.int64)
    raw[n - h:], holds[n - h:] = np.nan, 0
    kernels.triple_barrier(high, low, close, vol, pt_multiplier, sl_multiplier, h, raw, holds)
    return raw, holds


def barrier_classes(raw: np.ndarray) -> np.ndarray:
    """+1 -> 0 (BUY), 0 -> 1 (HOLD), -1 -> 2 (SELL)."""
    return (1 - np.asarray(raw)).astype(np.int64)


def cusum_events(close: np.ndarray, threshold: float | None = None, multiplier: float = 0.5,
                 vol_span: int = 50) -> np.ndarray:
    """Boolean event mask (§6.2 CUSUM): h = threshold, else multiplier × mean EWM-std(vol_span) of
    log returns; S⁺ = max(0, S⁺ + r - h), S⁻ = min(0, S⁻ + r + h); an event at bar i+1 when S⁺ > h
    (S⁺ resets) or else S⁻ < -h (S⁻ resets)."""
    prices = kernels.as_input(close)
    returns = np.diff(np.log(prices))
    h = threshold if threshold is not None else multiplier * pd.Series(returns).ewm(span=vol_span).std().mean()
    events = np.zeros(len(prices), dtype=bool)
    kernels.cusum_events(returns, h, events)
    return events


def uniqueness_weights(starts: np.ndarray, holds: np.ndarray, length: int | None = None) -> np.ndarray:
    """w_i = mean of 1/c_k over k in [start_i, start_i + hold_i), c_k = labels active at bar k;
    normalised to mean 1 (§6.2). `starts` are bar positions (events need not be consecutive)."""
    starts, holds = (np.ascontiguousarray(a, dtype=np.int64) for a in (starts, holds))
    if len(starts) != len(holds):
        raise ValueError(f"{len(starts)} starts but {len(holds)} holding periods")
    if len(starts) == 0:
        return np.zeros(0)
    size = int((starts + holds).max()) + 1 if length is None else length
    weights = np.empty(len(starts))
    if not kernels.uniqueness(starts, holds, size, weights):
        raise IndexError(f"a label starts or ends outside the {size} bars counted")
    mean = weights.mean()  # numpy's pairwise sum, as before
    if mean > 0:
        weights /= mean
    return weights


# --------------------------------------------------------------------------------------------
# Forward return (§6.3) and context (§6.4)
# --------------------------------------------------------------------------------------------


def forward_returns(close: np.ndarray, horizon: int = 20) -> np.ndarray:
    """(C_{t+H} - C_t)/C_t per bar; NaN for the last H bars."""
    close = np.asarray(close, dtype=np.float64)
    if len(close) < horizon + 1:
        raise DataError(f"forward_return labels with horizon {horizon} need at least {horizon + 1} bars, "
                        f"got {len(close)}")
    out = np.full(len(close), np.nan)
    out[:-horizon] = (close[horizon:] - close[:-horizon]) / close[:-horizon]
    return out


def context_labels(close: np.ndarray, horizon: int = 5, bullish_threshold: float = 0.005,
                   bearish_threshold: float = -0.005) -> np.ndarray:
    """BULLISH (0) if the H-bar forward return > bullish_threshold, else BEARISH (1) if it is
    < bearish_threshold, else NEUTRAL (2); NaN for the last H bars (float array)."""
    close = np.asarray(close, dtype=np.float64)
    labels = np.full(len(close), np.nan)
    if len(close) <= horizon:
        return labels
    ret = (close[horizon:] - close[:-horizon]) / close[:-horizon]
    labels[:-horizon] = np.where(ret > bullish_threshold, BULLISH, np.where(ret < bearish_threshold, BEARISH, NEUTRAL))
    return labels


# --------------------------------------------------------------------------------------------
# Multi-scale regime (§6.5)
# --------------------------------------------------------------------------------------------


def atr_threshold(high: np.ndarray, low: np.ndarray, close: np.ndarray, mult: float, atr_period: int) -> float:
    """mult × median(SMA_atr_period(TR), valid part) / median(C), with TR_0 = H_0 - L_0."""
    prev = np.concatenate([[np.nan], close[:-1]])
    tr = np.fmax(high - low, np.fmax(np.abs(high - prev), np.abs(low - prev)))
    if len(close) < atr_period:
        return 0.0
    atr = np.convolve(tr, np.ones(atr_period) / atr_period, mode="valid")
    median_close = float(np.median(close))
    return mult * float(np.median(atr)) / median_close if median_close > 0 else 0.0


def extreme_pivots(close: np.ndarray, threshold: float) -> list[tuple[int, float]]:
    """The regime labeler's zigzag: pivot 0 is bar 0; the running extreme is confirmed as a pivot
    when price reverses by `threshold` from it; the final running extreme is the last pivot."""
    prices = np.asarray(close, dtype=np.float64).tolist()
    if len(prices) < 3:
        return [(0, prices[0])]
    pivots = [(0, prices[0])]
    ext_i, ext_p, direction = 0, prices[0], 0
    for i, p in enumerate(prices[1:], 1):
        if ext_p == 0:
            continue
        change = (p - ext_p) / ext_p
        if direction == 0:
            if abs(change) >= threshold:
                direction, ext_i, ext_p = (1 if change > 0 else -1), i, p
        elif direction == 1:
            if p > ext_p:
                ext_i, ext_p = i, p
            elif change <= -threshold:
                pivots.append((ext_i, ext_p))
                direction, ext_i, ext_p = -1, i, p
        elif p < ext_p:
            ext_i, ext_p = i, p
        elif change >= threshold:
            pivots.append((ext_i, ext_p))
            direction, ext_i, ext_p = 1, i, p
    if pivots[-1][0] != ext_i:
        pivots.append((ext_i, ext_p))
    return pivots


def _progressive(micro: list[tuple[int, float]], up: bool, tolerance: float) -> bool:
    """Whether the micro pivots' lows rise (up segment) or highs fall (down segment) in at least
    `tolerance` of consecutive pairs; pivots are highs or lows by their neighbours."""
    if len(micro) < 4:
        return False
    prices = [p for _, p in micro]
    highs, lows = [], []
    for i, price in enumerate(prices):
        if i == 0 or i == len(prices) - 1:
            neighbour = prices[1] if i == 0 else prices[i - 1]
            (lows if price < neighbour else highs).append(price)
        elif price > prices[i - 1] and price > prices[i + 1]:
            highs.append(price)
        elif price < prices[i - 1] and price < prices[i + 1]:
            lows.append(price)
    values = lows if up else highs
    if len(values) < 2:
        return False
    pairs = zip(values, values[1:], strict=False)
    progressive = sum(b > a if up else b < a for a, b in pairs)
    return progressive / (len(values) - 1) >= tolerance


def volatile_mask(close: np.ndarray, vol_lookback: int, vol_crisis_threshold: float, forward: int) -> np.ndarray:
    """VOLATILE where std(log r[t:t+fw]) / std(log r[t-lb:t]) > threshold (ddof 1), lb <= t < N-fw."""
    n = len(close)
    mask = np.zeros(n, dtype=bool)
    if n < vol_lookback + 2 or n - forward <= vol_lookback:
        return mask
    returns = np.diff(np.log(np.maximum(close, 1e-10)))
    t = np.arange(vol_lookback, n - forward)
    hist = np.std(sliding_window_view(returns, vol_lookback)[t - vol_lookback], axis=1, ddof=1)
    if forward > 1:
        fwd = np.std(sliding_window_view(returns, forward)[t], axis=1, ddof=1)
    else:
        fwd = np.zeros(len(t))
    with np.errstate(divide="ignore", invalid="ignore"):
        mask[t] = (hist > 0) & (fwd / np.where(hist > 0, hist, 1) > vol_crisis_threshold)
    return mask


def regime_labels(high: np.ndarray, low: np.ndarray, close: np.ndarray, *, macro_atr_mult: float = 3.0,
                  micro_atr_mult: float = 1.0, atr_period: int = 14, vol_lookback: int = 120,
                  vol_crisis_threshold: float = 2.0, progression_tolerance: float = 0.5) -> np.ndarray:
    """TRENDING_UP 0, TRENDING_DOWN 1, RANGING 2, VOLATILE 3 per bar (float, NaN after the last
    macro pivot or when there is too little data), as KTRDR's MultiScaleRegimeLabeler."""
    high, low, close = (np.asarray(a, dtype=np.float64) for a in (high, low, close))
    n = len(close)
    labels = np.full(n, np.nan)
    if n < atr_period + 2:
        return labels
    macro_t = atr_threshold(high, low, close, macro_atr_mult, atr_period)
    micro_t = atr_threshold(high, low, close, micro_atr_mult, atr_period)
    if macro_t <= 0 or micro_t <= 0:
        return labels
    macro, micro = extreme_pivots(close, macro_t), extreme_pivots(close, micro_t)
    if len(macro) < 2:
        return labels
    volatile = volatile_mask(close, vol_lookback, vol_crisis_threshold, atr_period)
    micro_index = np.array([i for i, _ in micro])
    for (start, start_p), (end, end_p) in zip(macro, macro[1:], strict=False):
        up = end_p > start_p
        inside = micro[np.searchsorted(micro_index, start):np.searchsorted(micro_index, end, side="right")]
        trend = (TRENDING_UP if up else TRENDING_DOWN) if _progressive(inside, up, progression_tolerance) else RANGING
        labels[start:end + 1] = np.where(volatile[start:end + 1], VOLATILE, trend)
    return labels


# --------------------------------------------------------------------------------------------
# One entry point
# --------------------------------------------------------------------------------------------


@dataclass
class LabelSet:
    """One symbol's labels on its base-timeframe bars.

    `values`: float64 per bar, NaN where the bar has no label (class indices are whole numbers).
    `holds`: triple barrier holding periods per bar (0 where unlabelled), else None.
    `weights`: uniqueness weights per bar (NaN where unlabelled) when `compute_weights`, else None.
    """

    values: np.ndarray
    holds: np.ndarray | None = None
    weights: np.ndarray | None = None

    @property
    def labelled(self) -> np.ndarray:
        return ~np.isnan(self.values)


def make_labels(source: str, params: dict[str, Any], frame: pd.DataFrame) -> LabelSet:
    """The labels of `source` with resolved `params` (LabelConfig.params) for an OHLCV frame."""
    high, low, close = (frame[c].to_numpy(dtype=np.float64) for c in ("high", "low", "close"))
    if source == "zigzag":
        return LabelSet(zigzag_labels(close, params.get("zigzag_threshold", 0.02)).astype(np.float64))
    if source == "forward_return":
        return LabelSet(forward_returns(close, params["horizon"]))
    if source == "context":
        return LabelSet(context_labels(close, params["horizon"], params["bullish_threshold"],
                                       params["bearish_threshold"]))
    if source == "regime":
        keys = ("macro_atr_mult", "micro_atr_mult", "atr_period", "vol_lookback", "vol_crisis_threshold",
                "progression_tolerance")
        return LabelSet(regime_labels(high, low, close, **{k: params[k] for k in keys}))
    if source != "triple_barrier":
        raise ValueError(f"unknown label source {source!r}; supported: {', '.join(CLASS_NAMES)}")
    keys = ("pt_multiplier", "sl_multiplier", "max_holding_period", "vol_span", "vol_method")
    values, all_holds = _barrier_outcomes(high, low, close, *(params[k] for k in keys))
    np.subtract(1.0, values, out=values)  # barrier_classes, in place (NaN stays NaN)
    threshold = params.get("cusum_threshold")
    if threshold is not None:  # label CUSUM event bars only
        events = cusum_events(close, threshold or None, params["cusum_multiplier"], params["vol_span"])
        values[~events] = np.nan
        all_holds[~events] = 0
    weights = _labelled_weights(values, all_holds) if params.get("compute_weights") else None
    return LabelSet(values, all_holds, weights)


def _labelled_weights(values: np.ndarray, holds: np.ndarray) -> np.ndarray:
    """uniqueness_weights of the labelled bars (values not NaN), each spanning its holding period,
    in place on the bars: NaN where unlabelled."""
    weights = np.empty(len(values))
    if not kernels.labelled_uniqueness(values, holds, weights):
        raise IndexError("a label's holding period runs past the last bar")
    labelled = weights[~np.isnan(values)]  # in bar order: the same mean as uniqueness_weights takes
    mean = labelled.mean() if len(labelled) else 0.0
    if mean > 0:
        np.divide(weights, mean, out=weights)
    return weights
