"""Compiled (numba) loops of the feature pipeline: the smoothing recursions of the indicators, the
membership functions and the label walks.

Each kernel performs the same floating-point operations, in the same order, as the pandas/numpy
code it replaces (pandas' exponential smoothing is re-implemented step for step), so values are
unchanged, bit for bit; the callers keep the parts that are not loops (pairwise-summed means,
argument checks) in numpy.

Signatures are explicit: importing this module compiles every kernel, or loads it from numba's
on-disk cache, and no call can trigger a compilation later (a job never pays one). Input arrays are
typed read-only, which also accepts writable arrays, because pandas hands out read-only views;
callers pass C-contiguous float64 (see `as_input`). Kernels write their bar-sized results into
arrays the caller allocates with numpy: numpy asks for transparent huge pages, and first-touching
a fresh 8 MB array measured 2x cheaper that way than through numba's allocator (at 1M bars, page
faults are a large part of the time). numba is a hard dependency of the `worker` extra: no slower
fallback.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numba import njit, types

_F8 = types.float64
_I8 = types.int64
_IN = types.Array(_F8, 1, "C", readonly=True)
_OUT = types.Array(_F8, 1, "C")
_LABELS = types.Array(_I8, 1, "C")
_INDICES = types.Array(_I8, 1, "C", readonly=True)
_EVENTS = types.Array(types.boolean, 1, "C")


def _kernel(signature: object):
    """njit, compiled for `signature`, cached on disk, with numpy's error model: x / 0 gives inf or
    NaN as in numpy instead of raising ZeroDivisionError (and costs no zero checks)."""
    return njit(signature, cache=True, error_model="numpy")


def _inline(function: Callable) -> Callable:
    """A helper of the kernels, inlined into each (numba IR): never compiled on its own."""
    return njit(inline="always", error_model="numpy")(function)


def as_input(values: object) -> np.ndarray:
    """`values` as a C-contiguous float64 array (no copy when it already is one)."""
    return np.ascontiguousarray(values, dtype=np.float64)


def com_from_span(span: float) -> float:
    """Center of mass for an EWM span, computed as pandas computes it."""
    return float((span - 1) / 2)


def com_from_alpha(alpha: float) -> float:
    """Center of mass for an EWM alpha, computed as pandas computes it (1/n is not exact)."""
    return float((1 - alpha) / alpha)


# --- exponential smoothing, as pandas' ewm(...).mean() with ignore_na=False, min_periods <= 1 --------


@_inline
def _ewm_params(com: float, adjust: bool) -> tuple[float, float, bool, bool]:
    """The constants of pandas' ewm recursion for a center of mass."""
    alpha = 1.0 / (1.0 + com)
    return 1.0 - alpha, 1.0 if adjust else alpha, adjust, not adjust and com == 1


@_inline
def _ewm_step(weighted: float, old_wt: float, cur: float, params: tuple) -> tuple[float, float]:
    """One step of pandas' ewm recursion: (weighted mean, weight of the past) after value `cur`.

    Start from (NaN, 1.0). A missing value (NaN) keeps the mean and decays the past's weight;
    pandas skips the update when the value equals the mean (constant series) and, for com == 1
    without adjust, takes the new weight as 1 - old weight.
    """
    old_wt_factor, new_wt, adjust, one_minus_old = params
    if weighted == weighted:
        old_wt *= old_wt_factor
        if cur == cur:
            if weighted != cur:
                if one_minus_old:
                    new_wt = 1.0 - old_wt
                weighted = old_wt * weighted + new_wt * cur
                # Without adjust the weights sum to exactly 1 between gaps, and x / 1 == x: skipping
                # that division takes it off the recursion's critical path, bit for bit the same.
                if old_wt + new_wt != 1.0:
                    weighted /= old_wt + new_wt
            old_wt = old_wt + new_wt if adjust else 1.0
    elif cur == cur:
        weighted = cur
    return weighted, old_wt


@_kernel(types.none(_IN, _F8, types.boolean, _OUT))
def ewm_mean(x: np.ndarray, com: float, adjust: bool, out: np.ndarray) -> None:
    """pandas' `Series(x).ewm(com=com, adjust=adjust).mean()`, into `out`."""
    params = _ewm_params(com, adjust)
    weighted, old_wt = np.nan, 1.0
    for i in range(len(x)):
        weighted, old_wt = _ewm_step(weighted, old_wt, x[i], params)
        out[i] = weighted


# --- fused indicators: one pass, several smoothing states --------------------------------------------


@_inline
def _fmax(a: float, b: float) -> float:
    """np.fmax: the larger, ignoring a NaN operand."""
    if a != a:
        return b
    if b != b:
        return a
    return a if a >= b else b


@_kernel(types.none(_IN, _I8, _F8, _F8, _F8, _OUT))
def rsi(source: np.ndarray, period: int, seed_gain: float, seed_loss: float, com: float, out: np.ndarray) -> None:
    """Wilder's RSI into `out`: the average gain and loss start at t = period from the given seeds
    (the means of the first `period` changes) and follow ewm(com, adjust=False); NaN before."""
    n = len(source)
    out[:period] = np.nan
    params = _ewm_params(com, False)
    # The seeds are the smoothings' first values: weight 1, as pandas starts a series.
    gain, loss, gain_wt, loss_wt = seed_gain, seed_loss, 1.0, 1.0
    for t in range(period, n):
        if t > period:
            change = source[t] - source[t - 1]
            # np.maximum(±change, 0), NaN kept; written out here with `|` (a helper measured 2.5x
            # slower: compiled to branches on the sign of the change, a coin flip).
            up = change if (change > 0.0) | (change != change) else 0.0
            down = -change if (-change > 0.0) | (change != change) else 0.0
            gain, gain_wt = _ewm_step(gain, gain_wt, up, params)
            loss, loss_wt = _ewm_step(loss, loss_wt, down, params)
        if loss == 0:
            out[t] = 100.0 if gain > 0 else 50.0
        else:
            out[t] = 100.0 - 100.0 / (1.0 + gain / loss)


@_kernel(types.none(_IN, _IN, _IN, _F8, _OUT, _OUT, _OUT))
def adx(high: np.ndarray, low: np.ndarray, close: np.ndarray, com: float, adx_out: np.ndarray, plus_out: np.ndarray,
        minus_out: np.ndarray) -> None:
    """ADX, +DI and -DI into the three outputs: true range and directional movements smoothed by
    ewm(com, adjust=False), DI and DX 0 where their denominator is 0, ADX the same smoothing of DX.
    Both DMs are 0 at t = 0 and TR_0 = H_0 - L_0."""
    n = len(close)
    params = _ewm_params(com, False)
    tr_s = plus_s = minus_s = dx_s = np.nan
    tr_wt = plus_wt = minus_wt = dx_wt = 1.0
    for t in range(n):
        if t == 0:
            tr, plus_dm, minus_dm = high[0] - low[0], 0.0, 0.0
        else:
            up = high[t] - high[t - 1]
            down = -(low[t] - low[t - 1])
            # `&`, not `and`: selects instead of branches on these coin flips.
            plus_dm = up if (up > down) & (up > 0) else 0.0
            minus_dm = down if (down > up) & (down > 0) else 0.0
            prev = close[t - 1]
            tr = _fmax(high[t] - low[t], _fmax(abs(high[t] - prev), abs(low[t] - prev)))
        tr_s, tr_wt = _ewm_step(tr_s, tr_wt, tr, params)
        plus_s, plus_wt = _ewm_step(plus_s, plus_wt, plus_dm, params)
        minus_s, minus_wt = _ewm_step(minus_s, minus_wt, minus_dm, params)
        plus_di = 100 * plus_s / tr_s if tr_s != 0 else 0.0
        minus_di = 100 * minus_s / tr_s if tr_s != 0 else 0.0
        di_sum = plus_di + minus_di
        dx = 100 * abs(plus_di - minus_di) / di_sum if di_sum != 0 else 0.0
        dx_s, dx_wt = _ewm_step(dx_s, dx_wt, dx, params)
        adx_out[t], plus_out[t], minus_out[t] = dx_s, plus_di, minus_di


@_kernel(types.none(_IN, _F8, _F8, _F8, _OUT, _OUT, _OUT))
def macd(source: np.ndarray, fast_com: float, slow_com: float, signal_com: float, line_out: np.ndarray,
         signal_out: np.ndarray, hist_out: np.ndarray) -> None:
    """MACD line (fast EWM - slow EWM), signal (its EWM) and histogram (their difference) into the
    three outputs; adjust=False."""
    n = len(source)
    fast_p, slow_p = _ewm_params(fast_com, False), _ewm_params(slow_com, False)
    signal_p = _ewm_params(signal_com, False)
    fast = slow = signal = np.nan
    fast_wt = slow_wt = signal_wt = 1.0
    for t in range(n):
        fast, fast_wt = _ewm_step(fast, fast_wt, source[t], fast_p)
        slow, slow_wt = _ewm_step(slow, slow_wt, source[t], slow_p)
        line = fast - slow
        signal, signal_wt = _ewm_step(signal, signal_wt, line, signal_p)
        line_out[t], signal_out[t], hist_out[t] = line, signal, line - signal


@_kernel(types.none(_IN, _I8, _OUT))
def roc(source: np.ndarray, period: int, out: np.ndarray) -> None:
    """Rate of change in percent over `period` bars into `out`; NaN where not finite or t < period."""
    out[:period] = np.nan
    for t in range(period, len(source)):
        prev = source[t - period]
        value = (source[t] - prev) / prev * 100
        out[t] = value if abs(value) < np.inf else np.nan


# --- membership functions: KTRDR's rules, first match wins, NaN matches none ---------------------------


@_kernel(types.none(_IN, _F8, _F8, _F8, _F8, _F8, _OUT))
def triangular(x: np.ndarray, a: float, b: float, c: float, rise_den: float, fall_den: float,
               out: np.ndarray) -> None:
    """Triangular membership of `x` into `out` (rise and fall divided by the given denominators)."""
    # The rules are applied last-priority first, each overriding, with `&`/`|` rather than
    # branches, so the loop compiles to vector selects; the side is chosen before dividing (the
    # same division, one per value).
    for i in range(len(x)):
        v = x[i]
        rising = v < b
        degree = (v - a if rising else c - v) / (rise_den if rising else fall_den)
        degree = degree if ((a < v) & rising) | ((b < v) & (v < c)) else np.nan
        degree = 0.0 if (v <= a) | (v >= c) else degree
        out[i] = 1.0 if v == b else degree


@_kernel(types.none(_IN, _F8, _F8, _F8, _F8, _F8, _F8, _OUT))
def trapezoidal(x: np.ndarray, a: float, b: float, c: float, d: float, rise_den: float, fall_den: float,
                out: np.ndarray) -> None:
    """Trapezoidal membership of `x` into `out` (rise and fall divided by the given denominators)."""
    for i in range(len(x)):  # as `triangular`: last rule first, as selects, one division
        v = x[i]
        rising = v < b
        degree = (v - a if rising else d - v) / (rise_den if rising else fall_den)
        degree = degree if ((a < v) & rising) | ((c < v) & (v < d)) else np.nan
        degree = 1.0 if (b <= v) & (v <= c) else degree
        out[i] = 0.0 if (v <= a) | (v >= d) else degree


# --- label walks ------------------------------------------------------------------------------------


@_kernel(_LABELS(_IN, _F8))
def zigzag_pivots(close: np.ndarray, threshold: float) -> np.ndarray:
    """Zigzag pivot indices of a non-empty, positive `close` (see labels.zigzag_pivots)."""
    n = len(close)
    pivots = np.empty(n, dtype=np.int64)  # only the pages of the pivots found get touched
    pivots[0] = start = 0
    for i in range(1, n):
        if abs((close[i] - close[0]) / close[0]) >= threshold:
            start = i
            break
    if start == 0:
        return pivots[:1].copy()
    pivots[1] = start
    count = 2
    ref = close[start]
    up = ref > close[0]
    neg = -threshold
    for i in range(start + 1, n):
        p = close[i]
        if up:
            if p > ref:
                pivots[count - 1] = i
                ref = p
            elif (p - ref) / ref <= neg:
                pivots[count] = i
                count += 1
                ref = p
                up = False
        elif p < ref:
            pivots[count - 1] = i
            ref = p
        elif (p - ref) / ref >= threshold:
            pivots[count] = i
            count += 1
            ref = p
            up = True
    return pivots[:count].copy()  # a copy, so the n-sized buffer is freed


@_kernel(types.none(_IN, _INDICES, _I8, _I8, _I8, _LABELS))
def segment_labels(close: np.ndarray, pivots: np.ndarray, buy: int, hold: int, sell: int, out: np.ndarray) -> None:
    """Zigzag segment labels into `out` for ascending `pivots` (see labels.segment_labels): `hold`,
    except bars strictly inside a segment: `buy` if it rises, else `sell`."""
    out[:] = hold
    for k in range(len(pivots) - 1):
        out[pivots[k] + 1:pivots[k + 1]] = buy if close[pivots[k + 1]] > close[pivots[k]] else sell


@_kernel(types.none(_IN, _IN, _IN, _IN, _F8, _F8, _I8, _OUT, _LABELS))
def triple_barrier(high: np.ndarray, low: np.ndarray, close: np.ndarray, vol: np.ndarray, pt_multiplier: float,
                   sl_multiplier: float, horizon: int, labels: np.ndarray, holds: np.ndarray) -> None:
    """Raw labels (+1/0/-1, as float64: make_labels turns them into classes in place) and holding
    periods into the outputs for t < N - horizon (see labels.triple_barrier_labels)."""
    root = math.sqrt(horizon)
    for t in range(len(close) - horizon):
        entry, sigma = close[t], vol[t]
        upper, lower = entry * (1 + pt_multiplier * sigma), entry * (1 - sl_multiplier * sigma)
        # Bars t+1 .. t+horizon as slices: 0-based indices spare the negative-index checks.
        highs, lows = high[t + 1:t + 1 + horizon], low[t + 1:t + 1 + horizon]
        hold = 0
        for k in range(horizon):
            if (highs[k] >= upper) | (lows[k] <= lower):
                hold = k + 1
                break
        if hold:
            up, down = highs[hold - 1] >= upper, lows[hold - 1] <= lower
            labels[t] = (1 if close[t + hold] >= entry else -1) if up & down else (1 if up else -1)
        else:  # no barrier touched: the sign of the return, unless it is small
            ret = (close[t + horizon] - entry) / entry
            hold = horizon
            labels[t] = 0 if abs(ret) < sigma * root * 0.5 else (1 if ret > 0 else (-1 if ret < 0 else 0))
        holds[t] = hold


@_inline
def _running_inverse_sum(buf: np.ndarray) -> None:
    """In place: the difference array of the concurrency c (+1 where a label starts, -1 where it
    ends) becomes the running sum of 1/c before each bar, with the same additions in the same order
    as numpy's cumsums."""
    count, delta, buf[0] = 0.0, buf[0], 0.0
    for k in range(len(buf) - 1):
        count += delta
        delta = buf[k + 1]
        buf[k + 1] = buf[k] + (1.0 / count if count > 0 else 0.0)


@_kernel(types.boolean(_INDICES, _INDICES, _I8, _OUT))
def uniqueness(starts: np.ndarray, holds: np.ndarray, size: int, weights: np.ndarray) -> bool:
    """Mean of 1/c_k over each label's bars [start, start + hold) into `weights`, c_k the number of
    labels active at bar k < size (see labels.uniqueness_weights; not normalised). False, with
    nothing written, when a start or end lies outside 0..size."""
    for i in range(len(starts)):
        if not (0 <= starts[i] <= size and 0 <= starts[i] + holds[i] <= size):
            return False
    buf = np.zeros(size + 1)
    for i in range(len(starts)):
        buf[starts[i]] += 1.0
    for i in range(len(starts)):
        buf[starts[i] + holds[i]] -= 1.0
    _running_inverse_sum(buf)
    for i in range(len(starts)):
        weights[i] = (buf[starts[i] + holds[i]] - buf[starts[i]]) / max(holds[i], 1)
    return True


@_kernel(types.boolean(_IN, _INDICES, _OUT))
def labelled_uniqueness(values: np.ndarray, holds: np.ndarray, weights: np.ndarray) -> bool:
    """`uniqueness` with one label per bar, in bar space: bar i is labelled where values[i] is not
    NaN, its label spans [i, i + holds[i]); weights[i] NaN where unlabelled. Spares make_labels the
    index arrays, gathers and scatters (30 MB at 1M bars). False, with nothing written, when a span
    ends beyond the bars."""
    n = len(values)
    for i in range(n):
        if values[i] == values[i] and not 0 <= i + holds[i] <= n:
            return False
    buf = np.zeros(n + 1)
    for i in range(n):
        if values[i] == values[i]:
            buf[i] += 1.0
            buf[i + holds[i]] -= 1.0
    _running_inverse_sum(buf)
    for i in range(n):
        labelled = values[i] == values[i]
        weights[i] = (buf[i + holds[i]] - buf[i]) / max(holds[i], 1) if labelled else np.nan
    return True


@_kernel(types.none(_IN, _F8, _EVENTS))
def cusum_events(returns: np.ndarray, h: float, events: np.ndarray) -> None:
    """Symmetric CUSUM filter on `returns` (see labels.cusum_events): sets events[i + 1] where
    return i triggers one (`events` all False on entry, one longer than `returns`)."""
    s_pos = s_neg = 0.0
    for i in range(len(returns)):
        up, down = s_pos + (returns[i] - h), s_neg + (returns[i] + h)
        s_pos = up if up > 0.0 else 0.0
        s_neg = down if down < 0.0 else 0.0
        if s_pos > h:
            events[i + 1], s_pos = True, 0.0
        elif s_neg < -h:
            events[i + 1], s_neg = True, 0.0


def warm_up() -> None:
    """Run every kernel once on tiny arrays. Importing this module compiled them (or loaded them
    from the cache); running each too means a worker's parent pays any first-call cost, and a
    broken install fails at start, before it forks work horses."""
    x = np.linspace(1.0, 2.0, 8)
    x.flags.writeable = False  # the read-only views pandas hands out
    out, out2, out3 = np.empty(8), np.empty(8), np.empty(8)
    holds = np.empty(8, dtype=np.int64)
    ewm_mean(x, 1.0, True, out)
    rsi(x, 2, 0.5, 0.5, 1.0, out)
    adx(x + 0.1, x - 0.1, x, 1.0, out, out2, out3)
    macd(x, 1.0, 2.0, 1.0, out, out2, out3)
    triangular(x, 1.0, 1.5, 2.0, 0.5, 0.5, out)
    trapezoidal(x, 1.0, 1.2, 1.8, 2.0, 0.2, 0.2, out)
    roc(x, 2, out)
    segment_labels(x, zigzag_pivots(x, 0.1), 0, 1, 2, np.empty(8, dtype=np.int64))
    triple_barrier(x + 0.1, x - 0.1, x, np.full(8, 0.01), 2.0, 1.5, 2, out, holds)
    uniqueness(np.arange(6), np.full(6, 2), 8, out)
    labelled_uniqueness(x, np.full(8, 0), out)
    cusum_events(np.diff(x), 0.01, np.zeros(8, dtype=np.bool_))
