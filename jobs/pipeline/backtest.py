"""The backtest engine: a model's per-bar decisions replayed against bars, with KTRDR's trading rules
(docs: the KTRDR backtest fixture README, defects D1..D19) and its accounting defects fixed.

What it keeps from KTRDR, so that a run can be checked against KTRDR's recorded runs to 1e-9:

- a signal decided on bar t fills at bar t+1's open, with adverse slippage `s` and commission `c`
  of the notional on every fill; entries from flat are sized `q = int(position_size * cash / (1 + c)
  / open)` (KTRDR hard-codes position_size = 0.25, D16: here it is a setting);
- the decision filters, in KTRDR's order: confidence below the threshold (classification only),
  fewer than `min_signal_separation_hours` of wall clock since the last executed fill, BUY while long
  or SELL while short (position awareness), SELL while flat unless shorts from flat are allowed
  (regression models always may, as in KTRDR);
- one fill never reverses a position: BUY while short only covers, SELL while long only closes;
- the portfolio is marked to market at each bar's close; an open position is force-closed at the
  last bar's close, with slippage and commission.

What it does differently (each a KTRDR defect):

- D7: the last equity point is taken after the forced close, so the curve ends at the cash a run
  really ends with;
- D8: a short is marked at `cash + entry * q + (entry - close) * q`; KTRDR also adds the entry
  commission back, as if it had not been paid;
- D1: a trade's net P&L includes its entry commission;
- D9: holding periods count every bar a position was held (see `_assemble`);
- D14/D15: bars whose model output is NaN are held and counted; a signal decided on the last bar
  (which has no next open to fill at) is reported, not dropped silently;
- D16/D17: the position size, the signal separation and shorting from flat are settings;
- D19: the fills, the round trips and the equity curve are part of the result.

There is no warm-up inside the engine: the caller passes exactly the bars to simulate, having computed
the features of their first bar with whatever history the indicators need. Feeding KTRDR's recorded
`decisions.csv` rows (KTRDR's bars from its 51st on) reproduces KTRDR's run.

Signals are -1 SELL, 0 HOLD, +1 BUY throughout (int8); KTRDR's class indices (0 BUY, 1 HOLD,
2 SELL) are translated once, in `classification_signals`. Amounts called `*_pct` are fractions
(0.01 is 1 %), as KTRDR's `total_return_pct`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numba import njit, types

from trainhost.jobs.pipeline.backtest_settings import BacktestConfig

if TYPE_CHECKING:
    import pandas as pd

BUY, HOLD, SELL = 1, 0, -1
CLASSIFICATION, REGRESSION = "classification", "regression"
_NS_PER_HOUR = 3_600_000_000_000
_SPACING_BARS = 1_001  # the bar spacing at the data's end: the median of the last 1,000 (robust to gaps, no full sort)
_SUM_TOLERANCE = 1e-6  # outputs that already sum to 1 within this are probabilities (KTRDR's test)

# Columns of the kernel's fill records (float64; bar, side and quantity are exact integers there).
_BAR, _SIDE, _PRICE, _QTY, _COMMISSION, _SLIPPAGE, _CASH, _FORCED, _MFE, _MAE = range(10)
_FILL_COLUMNS = 10
# Slots of the kernel's counters.
_NAN, _LOW_CONFIDENCE, _SEPARATION, _POSITION, _SHORT_FROM_FLAT, _REDUNDANT_AT_FILL, _UNFILLABLE, _LAST = range(8)
COUNTERS = ("nan_outputs", "below_confidence", "within_separation", "same_side_as_position", "short_from_flat",
            "redundant_at_fill", "entry_too_small")


@dataclass(frozen=True)
class Signals:
    """A model's decision per bar before the filters: `raw` (int8, +1 BUY, 0 HOLD, -1 SELL) and its
    `confidence` (float64, NaN where the model's output was NaN), with the `kind` of model, which
    decides the filters: only classification has a confidence threshold, only regression may always
    short from flat (as KTRDR)."""

    raw: np.ndarray
    confidence: np.ndarray
    kind: str = CLASSIFICATION

    def __post_init__(self) -> None:
        if not np.isin(np.asarray(self.raw), (SELL, HOLD, BUY)).all():
            raise ValueError("Signals.raw must hold -1 (SELL), 0 (HOLD) or +1 (BUY)")
        raw = np.ascontiguousarray(self.raw, dtype=np.int8)
        confidence = np.ascontiguousarray(self.confidence, dtype=np.float64)
        if self.kind not in (CLASSIFICATION, REGRESSION):
            raise ValueError(f"Signals.kind must be {CLASSIFICATION!r} or {REGRESSION!r}, got {self.kind!r}")
        if raw.ndim != 1 or raw.shape != confidence.shape:
            raise ValueError(f"Signals.raw and Signals.confidence must be 1-d of one length, got {raw.shape} and "
                             f"{confidence.shape}")
        object.__setattr__(self, "raw", raw)
        object.__setattr__(self, "confidence", confidence)


def classification_signals(outputs: np.ndarray) -> Signals:
    """Decisions of a 3-class model from its outputs (n, 3) in KTRDR's class order (0 BUY, 1 HOLD,
    2 SELL): the signal is the most probable class, the confidence its probability.

    A row that already is a probability vector (non-negative, summing to 1 within 1e-6) is used as
    it is; any other row is taken for logits and softmaxed, as KTRDR's decision function does (it
    only tests the sum; requiring non-negative entries too keeps logits that happen to sum to 1 from
    passing as probabilities; the signal is the same either way). A row with a NaN is HOLD with a
    NaN confidence (D14: held, and counted by `simulate`).
    """
    values = np.asarray(outputs, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != 3:
        raise ValueError(f"classification outputs must be (bars, 3) in the order BUY, HOLD, SELL; got {values.shape}")
    invalid = np.isnan(values).any(axis=1)
    is_probability = (np.abs(values.sum(axis=1) - 1.0) <= _SUM_TOLERANCE) & (values >= 0).all(axis=1)
    shifted = np.exp(values - np.nanmax(values, axis=1, initial=-np.inf, keepdims=True))
    probabilities = np.where(is_probability[:, None], values, shifted / shifted.sum(axis=1, keepdims=True))
    best = np.where(invalid, 1, np.argmax(np.nan_to_num(probabilities, nan=-1.0), axis=1))
    raw = np.array([BUY, HOLD, SELL], dtype=np.int8)[best]
    confidence = np.where(invalid, np.nan, np.take_along_axis(probabilities, best[:, None], axis=1)[:, 0])
    return Signals(raw, confidence, CLASSIFICATION)


def regression_signals(predictions: np.ndarray, config: BacktestConfig) -> Signals:
    """Decisions of a regression model from its predicted returns: BUY above the edge threshold
    τ = round_trip_cost × min_edge_multiplier, SELL below -τ, HOLD between; confidence
    min(|prediction| / 3τ, 1). A NaN prediction is HOLD with a NaN confidence (D14)."""
    values = np.asarray(predictions, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"regression predictions must be one value per bar, got shape {values.shape}")
    tau = config.round_trip_cost * config.min_edge_multiplier
    raw = np.where(values > tau, BUY, np.where(values < -tau, SELL, HOLD)).astype(np.int8)
    confidence = np.minimum(np.abs(values) / (3.0 * tau), 1.0)  # NaN stays NaN
    return Signals(raw, confidence, REGRESSION)


@dataclass
class BacktestRun:
    """One simulated run. Per bar: `equity` (float64, at the close; the last bar's after the forced
    close), `position` (int8, -1/0/+1: the position held through the bar, so a position force-closed
    at the last close still shows on the last bar), `decisions` (int8: the signal after the filters,
    to be filled at the next open). `fills` and `trades` are columns (dicts of equal-length numpy
    arrays, see `FILL_COLUMNS` and `TRADE_COLUMNS`); `counts` how many signals each filter held and
    how many bars had NaN outputs; `last_signal` a signal decided on the last bar (+1/-1, never filled:
    D15) or 0; `warnings` what a reader of the result should know."""

    times: np.ndarray
    equity: np.ndarray
    position: np.ndarray
    decisions: np.ndarray
    fills: dict[str, np.ndarray]
    trades: dict[str, np.ndarray]
    counts: dict[str, int]
    last_signal: int = 0
    warnings: list[str] = field(default_factory=list)

    def fills_frame(self) -> pd.DataFrame:
        """The fills as a pandas DataFrame, sides as BUY/SELL."""
        import pandas as pd

        frame = pd.DataFrame(self.fills)
        frame["side"] = np.where(frame["side"] > 0, "BUY", "SELL")
        return frame

    def trades_frame(self) -> pd.DataFrame:
        """The round trips as a pandas DataFrame, sides as LONG/SHORT."""
        import pandas as pd

        frame = pd.DataFrame(self.trades)
        frame["side"] = np.where(frame["side"] > 0, "LONG", "SHORT")
        return frame

    def equity_frame(self) -> pd.DataFrame:
        """Equity, position and decision per bar, indexed by the bar's time (UTC)."""
        import pandas as pd

        index = pd.DatetimeIndex(self.times, name="time").tz_localize("UTC")
        return pd.DataFrame({"equity": self.equity, "position": self.position, "decision": self.decisions},
                            index=index)


FILL_COLUMNS = ("bar", "time", "side", "price", "quantity", "commission", "slippage", "cash_after", "forced")
TRADE_COLUMNS = ("side", "entry_bar", "exit_bar", "entry_time", "exit_time", "entry_price", "exit_price", "quantity",
                 "gross_pnl", "commission", "slippage", "net_pnl", "return_pct", "holding_bars", "holding_hours",
                 "mfe", "mae", "forced")


_F8, _I8 = types.float64, types.int64
_TIMES = types.Array(_I8, 1, "C", readonly=True)
_PRICES = types.Array(_F8, 1, "C", readonly=True)
_RAW = types.Array(types.int8, 1, "C", readonly=True)
_SERIES = types.Array(_F8, 1, "C")
_STATES = types.Array(types.int8, 1, "C")
_RECORDS = types.Array(_F8, 2, "C")
_COUNTS = types.Array(_I8, 1, "C")


@njit(inline="always")
def _record(fills, k, bar, side, price, qty, commission, slippage, cash, forced, mfe, mae):
    """Write fill k; return k + 1."""
    row = fills[k]
    row[_BAR], row[_SIDE], row[_PRICE], row[_QTY] = bar, side, price, qty
    row[_COMMISSION], row[_SLIPPAGE], row[_CASH], row[_FORCED] = commission, slippage, cash, forced
    row[_MFE], row[_MAE] = mfe, mae
    return k + 1


@njit(inline="always")
def _positive(price):
    """Finite and positive (False for NaN)."""
    return (price > 0.0) & (price < np.inf)


@njit(inline="always")
def _exit(pos, entry, qty, reference, slippage, commission, cash):
    """(fill price, cash after) of closing `pos` at `reference` (an open, or the last close) with
    adverse slippage: a long receives its notional less commission; a cover gets back the reserved
    entry notional plus the short's P&L, less commission."""
    if pos > 0:
        price = reference * (1.0 - slippage)
        notional = price * qty
        return price, cash + (notional - notional * commission)
    price = reference * (1.0 + slippage)
    return price, cash + (entry * qty + (entry - price) * qty - price * qty * commission)


@njit(inline="always")
def _excursions(pos, entry, qty, high_seen, low_seen):
    """(MFE, MAE) of a position in money from the extremes seen while it was held (MFE >= 0 >= MAE)."""
    if pos > 0:
        best, worst = (high_seen - entry) * qty, (low_seen - entry) * qty
    else:
        best, worst = (entry - low_seen) * qty, (entry - high_seen) * qty
    return max(best, 0.0), min(worst, 0.0)


@njit(types.int64(_TIMES, _PRICES, _PRICES, _PRICES, _PRICES, _RAW, _PRICES, _F8, types.boolean, _I8, types.boolean,
                  types.boolean, _F8, _F8, _F8, _F8, _SERIES, _STATES, _STATES, _RECORDS, _COUNTS),
      cache=True, error_model="numpy")
def _simulate(times, open_, high, low, close, raw, confidence, threshold, use_confidence, min_gap_ns,
              position_awareness, shorts_from_flat, capital, commission, slippage, position_size,
              equity, position, decisions, fills, counts):
    """The bar loop (see the module docstring): writes equity, position and decisions per bar, the
    fills into `fills` (one row each) and the counters into `counts`; returns the number of fills, or
    -1 if a price is not finite and positive (the outputs are then meaningless).

    Cash arithmetic is KTRDR's, operation for operation (so its cash is reproduced to the last bit):
    an entry, long or short, pays its notional `price * q` plus commission (a short reserves the
    notional); see `_exit` for exits.
    """
    n = len(close)
    cash, pos, qty, entry = capital, 0, 0, 0.0
    last_fill, has_fill, pending, k = 0, False, 0, 0
    high_seen, low_seen = -np.inf, np.inf
    valid = True
    for t in range(n):
        # The prices' check, fused into this pass so that the bars are read once.
        valid &= (_positive(open_[t]) & _positive(high[t])) & (_positive(low[t]) & _positive(close[t]))
        if pending != 0:
            o = open_[t]
            if pos == 0:
                q = int(position_size * cash / (1.0 + commission) / o)
                if q <= 0:
                    counts[_UNFILLABLE] += 1
                else:
                    price = o * (1.0 + slippage) if pending > 0 else o * (1.0 - slippage)
                    notional = price * q
                    cash -= notional + notional * commission
                    k = _record(fills, k, t, pending, price, q, notional * commission, abs(price - o) * q, cash, 0.0,
                                np.nan, np.nan)
                    pos, qty, entry = pending, q, price
                    last_fill, has_fill = times[t], True
                    high_seen, low_seen = -np.inf, np.inf
            elif pending == -pos:
                price, cash = _exit(pos, entry, qty, o, slippage, commission, cash)
                mfe, mae = _excursions(pos, entry, qty, high_seen, low_seen)
                k = _record(fills, k, t, pending, price, qty, price * qty * commission, abs(price - o) * qty, cash,
                            0.0, mfe, mae)
                pos, qty = 0, 0
                last_fill, has_fill = times[t], True
            else:
                counts[_REDUNDANT_AT_FILL] += 1
            pending = 0
        if pos != 0:
            high_seen, low_seen = max(high_seen, high[t]), min(low_seen, low[t])

        signal = raw[t]
        if confidence[t] != confidence[t]:
            counts[_NAN] += 1
            signal = 0
        elif signal != 0:
            if use_confidence and confidence[t] < threshold:
                counts[_LOW_CONFIDENCE] += 1
                signal = 0
            elif has_fill and times[t] - last_fill < min_gap_ns:
                counts[_SEPARATION] += 1
                signal = 0
            elif position_awareness and signal == pos:
                counts[_POSITION] += 1
                signal = 0
            elif pos == 0 and signal < 0 and not shorts_from_flat:
                counts[_SHORT_FROM_FLAT] += 1
                signal = 0
        decisions[t], position[t], pending = signal, pos, signal

        c = close[t]
        if pos > 0:
            equity[t] = cash + c * qty
        elif pos < 0:
            equity[t] = cash + entry * qty + (entry - c) * qty
        else:
            equity[t] = cash

    counts[_LAST] = pending
    if pos != 0:
        c = close[n - 1]
        price, cash = _exit(pos, entry, qty, c, slippage, commission, cash)
        mfe, mae = _excursions(pos, entry, qty, high_seen, low_seen)
        k = _record(fills, k, n - 1, -pos, price, qty, price * qty * commission, abs(price - c) * qty, cash, 1.0,
                    mfe, mae)
        equity[n - 1] = cash
    return k if valid else -1


@njit(types.boolean(_TIMES), cache=True)
def _ascending(ns):
    """Whether the times are strictly increasing: one pass without temporaries, and without an early
    exit so that it vectorises (numpy's diff-and-compare allocates two bar-sized arrays)."""
    ok = True
    for i in range(1, len(ns)):
        ok &= ns[i] > ns[i - 1]
    return ok


def simulate(times: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
             signals: Signals, config: BacktestConfig) -> BacktestRun:
    """Replay `signals` (one per bar, decided at the bar's close) over the bars; see the module
    docstring for the rules. `times` are the bars' timestamps (their opens; datetime64 or int64 ns,
    strictly increasing); high and low serve the trades' MFE/MAE only."""
    ns = _nanoseconds(times)
    names = ("open", "high", "low", "close")
    prices = [_column(values, name, len(ns)) for values, name in zip((open_, high, low, close), names, strict=True)]
    if len(signals.raw) != len(ns):
        raise ValueError(f"one signal per bar is needed: {len(signals.raw)} signals for {len(ns)} bars")
    n = len(ns)
    equity = np.empty(n)
    position = np.empty(n, dtype=np.int8)
    decisions = np.empty(n, dtype=np.int8)
    # Every fill but the forced close follows a non-HOLD signal, so this bounds the fills.
    records = np.empty((np.count_nonzero(signals.raw) + 1, _FILL_COLUMNS))
    counts = np.zeros(8, dtype=np.int64)
    nfills = _simulate(ns, *prices, signals.raw, signals.confidence, config.confidence_threshold,
                       signals.kind == CLASSIFICATION, round(config.min_signal_separation_hours * _NS_PER_HOUR),
                       config.position_awareness, config.allow_short_from_flat or signals.kind == REGRESSION,
                       config.initial_capital, config.commission, config.slippage, config.position_size,
                       equity, position, decisions, records, counts)
    if nfills < 0:
        for values, name in zip(prices, names, strict=True):
            _check_prices(values, name)
    run = _assemble(ns, equity, position, decisions, records[:nfills], counts)
    if counts[_NAN]:
        run.warnings.append(f"{counts[_NAN]} bar(s) had a NaN model output and were held (HOLD)")
    if counts[_UNFILLABLE]:
        run.warnings.append(f"{counts[_UNFILLABLE]} entry signal(s) could not buy one unit with "
                            f"{config.position_size:g} of the cash and were not filled")
    return run


def buy_and_hold(times: np.ndarray, open_: np.ndarray, close: np.ndarray, config: BacktestConfig) -> BacktestRun:
    """The baseline: all in at the first bar's open, held, force-closed at the last bar's close, with
    the same costs and sizing rule as `simulate` but position_size 1.0 (all the cash: a strategy that
    only invests a quarter is compared with the market itself, not with a quarter of it). As the
    engine, it sizes on the raw open, so the slippage can take the cash below zero by up to
    slippage × capital. MFE and MAE are NaN (no high/low)."""
    ns = _nanoseconds(times)
    o, c = _column(open_, "open", len(ns)), _column(close, "close", len(ns))
    _check_prices(o, "open")
    _check_prices(c, "close")
    cost, slip, capital = config.commission, config.slippage, config.initial_capital
    qty = int(capital / (1.0 + cost) / o[0])
    if qty <= 0:
        raise ValueError(f"initial_capital {capital:g} cannot buy one unit at the first open {o[0]:g}")
    entry = o[0] * (1.0 + slip)
    cash = capital - entry * qty * (1.0 + cost)
    exit_price = c[-1] * (1.0 - slip)
    final = cash + exit_price * qty * (1.0 - cost)
    equity = cash + c * qty
    equity[-1] = final
    n = len(ns)
    records = np.array([
        [0, BUY, entry, qty, entry * qty * cost, (entry - o[0]) * qty, cash, 0.0, np.nan, np.nan],
        [n - 1, SELL, exit_price, qty, exit_price * qty * cost, (c[-1] - exit_price) * qty, final, 1.0, np.nan, np.nan],
    ])
    return _assemble(ns, equity, np.ones(n, dtype=np.int8), np.zeros(n, dtype=np.int8), records,
                     np.zeros(8, dtype=np.int64))


def _assemble(ns: np.ndarray, equity: np.ndarray, position: np.ndarray, decisions: np.ndarray, records: np.ndarray,
              counts: np.ndarray) -> BacktestRun:
    """The run from the kernel's outputs: fill columns, and round trips from consecutive fill pairs
    (an entry, then its exit: fills never reverse a position, so they alternate).

    Holding periods (D9): a position entered at bar i's open and exited at bar j's open was held
    through bars i..j-1, `j - i` bars; one force-closed at the last bar's close also through that
    bar. `holding_hours` is the wall clock from the entry fill to the exit fill, a forced close
    happening one bar spacing (the median of the last 1,000) after the last bar's timestamp. KTRDR
    measured up to the timestamp of the last bar held instead of to the exit, one bar short for every
    trade (and, for an exit after a weekend, short by the weekend too)."""
    times = ns.view("datetime64[ns]")
    bar = records[:, _BAR].astype(np.int64)
    fills = {
        "bar": bar, "time": times[bar], "side": records[:, _SIDE].astype(np.int8), "price": records[:, _PRICE],
        "quantity": records[:, _QTY].astype(np.int64), "commission": records[:, _COMMISSION],
        "slippage": records[:, _SLIPPAGE], "cash_after": records[:, _CASH], "forced": records[:, _FORCED] > 0,
    }
    entry, exit_ = records[0::2], records[1::2]
    side = entry[:, _SIDE].astype(np.int8)
    qty = entry[:, _QTY]
    entry_bar, exit_bar = entry[:, _BAR].astype(np.int64), exit_[:, _BAR].astype(np.int64)
    forced = exit_[:, _FORCED] > 0
    gross = (exit_[:, _PRICE] - entry[:, _PRICE]) * qty * side
    commission = entry[:, _COMMISSION] + exit_[:, _COMMISSION]
    net = gross - commission
    spacing = int(np.median(np.diff(ns[-_SPACING_BARS:]))) if forced.any() else 0
    exit_ns = ns[exit_bar] + np.where(forced, spacing, 0)
    trades = {
        "side": side, "entry_bar": entry_bar, "exit_bar": exit_bar, "entry_time": times[entry_bar],
        "exit_time": times[exit_bar], "entry_price": entry[:, _PRICE], "exit_price": exit_[:, _PRICE],
        "quantity": qty.astype(np.int64), "gross_pnl": gross, "commission": commission,
        "slippage": entry[:, _SLIPPAGE] + exit_[:, _SLIPPAGE], "net_pnl": net,
        "return_pct": net / (entry[:, _PRICE] * qty), "holding_bars": exit_bar - entry_bar + forced,
        "holding_hours": (exit_ns - ns[entry_bar]) / _NS_PER_HOUR, "mfe": exit_[:, _MFE], "mae": exit_[:, _MAE],
        "forced": forced,
    }
    run = BacktestRun(times, equity, position, decisions, fills, trades,
                      {name: int(counts[i]) for i, name in enumerate(COUNTERS)}, int(counts[_LAST]))
    if run.last_signal:
        run.warnings.append(f"a {'BUY' if run.last_signal > 0 else 'SELL'} signal on the last bar was not filled "
                            "(no next bar to fill it at)")
    return run


def _nanoseconds(times: np.ndarray) -> np.ndarray:
    """Bar times as C-contiguous int64 ns since the epoch (UTC), checked strictly increasing."""
    ns = np.ascontiguousarray(np.asarray(times, dtype="datetime64[ns]").view(np.int64))
    if ns.ndim != 1 or len(ns) < 2:
        raise ValueError(f"a backtest needs at least 2 bars, got {ns.shape}")
    if not _ascending(ns):
        raise ValueError("bar times must be strictly increasing")
    return ns


def _column(values: np.ndarray, name: str, n: int) -> np.ndarray:
    """A price column as C-contiguous float64, one value per bar."""
    prices = np.ascontiguousarray(values, dtype=np.float64)
    if prices.shape != (n,):
        raise ValueError(f"{name} must have one value per bar ({n}), got shape {prices.shape}")
    return prices


def _check_prices(prices: np.ndarray, name: str) -> None:
    """Raise unless every price is finite and positive (min and max propagate NaN)."""
    if not (prices.min() > 0 and prices.max() < np.inf):
        raise ValueError(f"{name} prices must be finite and positive")
