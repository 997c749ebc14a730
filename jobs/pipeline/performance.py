"""Performance metrics of a backtest: its equity curve (one value per bar, at the close) and its round
trips, computed where KTRDR's own metrics are defective (D1, D3..D7, D9, D11 of the KTRDR backtest
fixture README) the way the standard definitions (empyrical's) compute them.

Per-bar returns are simple returns of the curve with the initial capital in front: bar 0's return is
its close against the capital it started with, so n bars give n returns and they compound exactly to
the total return (KTRDR drops the first). They are annualised with the data's own bars per year
(`bars_per_year`), not 252 (D3). Amounts named `*_pct` are fractions (0.01 is 1 %), as KTRDR's
`total_return_pct` and `max_drawdown_pct`; drawdowns are positive magnitudes, as KTRDR's.

Every value in the result is a finite number, a string or None (undefined: e.g. a profit factor
without losing trades, a Sharpe ratio of a constant curve), so it serialises to valid JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

_YEAR_NS = 365.25 * 24 * 3_600 * 1_000_000_000


def bars_per_year(times: np.ndarray) -> float:
    """How many bars a year of this data holds, from its own calendar: the number of bars divided by
    the years they span, the span running from the first bar's timestamp to one median spacing after
    the last (so that n bars of a regular grid span n spacings). A market that closes at weekends or
    nights has fewer bars a year than its bar size suggests: FX 1h about 6,200, crypto 1h about
    8,770, daily stock bars about 252. `times` are datetime64 (any unit) or int64 ns, ascending."""
    ns = _nanoseconds(times)
    if len(ns) < 2:
        raise ValueError("bars_per_year needs at least 2 bar times")
    span = ns[-1] - ns[0] + np.median(np.diff(ns))
    if span <= 0:
        raise ValueError("bar times must be ascending")
    return float(len(ns) * _YEAR_NS / span)


def performance_metrics(equity: np.ndarray, times: np.ndarray, trades: Mapping[str, np.ndarray],
                        initial_capital: float, bars_per_year: float) -> dict[str, float | int | str | None]:
    """Return, risk and trade statistics of one run.

    `equity`: value per bar at its close (the last one after any forced close: D7); `times`: the
    bars' timestamps; `trades`: round-trip columns with `net_pnl` (after both commissions: D1),
    `holding_hours` and `holding_bars` (a BacktestRun's `trades`, or a DataFrame of them);
    `bars_per_year`: the annualisation factor, normally `bars_per_year(times)`.

    Volatility, Sharpe (risk-free rate 0) and Sortino (downside deviation against 0, D4) follow
    empyrical's `annual_volatility`, `sharpe_ratio` and `sortino_ratio` with annualization =
    bars_per_year. The annualised return is the compound growth rate over the simulated bars, n /
    bars_per_year years (D11: not the calendar span that was asked for), as empyrical's
    `annual_return`. The maximum drawdown runs its peak from the initial capital (D6), and its money
    amount is that episode's peak minus its trough (D5); its peak, trough and recovery times are the
    bars' timestamps (the initial capital counts as standing at the first bar's), recovery None
    while the curve is still below that peak. Calmar is the annualised return over the drawdown, as
    empyrical's `calmar_ratio`.
    """
    values = np.asarray(equity, dtype=np.float64)
    ns = _nanoseconds(times)
    if values.ndim != 1 or len(values) < 2 or values.shape != ns.shape:
        raise ValueError(f"equity and times must be 1-d, of one length, at least 2 bars; got {values.shape} and "
                         f"{ns.shape}")
    if not (initial_capital > 0 and bars_per_year > 0):
        raise ValueError("initial_capital and bars_per_year must be positive")
    curve = np.concatenate([[float(initial_capital)], values])
    returns = curve[1:] / curve[:-1] - 1.0
    root = math.sqrt(bars_per_year)
    final = values[-1]

    years = len(values) / bars_per_year
    growth = final / initial_capital
    with np.errstate(over="ignore"):  # a big gain over a short span has no finite rate: None below
        annualized = growth ** (1.0 / years) - 1.0 if growth > 0 else None
    std = returns.std(ddof=1)
    downside = math.sqrt(np.mean(np.square(np.minimum(returns, 0.0))))
    mean = returns.mean()

    metrics: dict[str, float | int | str | None] = {
        "bars": len(values),
        "bars_per_year": bars_per_year,
        "total_return": final - initial_capital,
        "total_return_pct": (final - initial_capital) / initial_capital,
        "annualized_return": annualized,
        "volatility": std * root,
        "sharpe": mean / std * root if std > 0 else None,
        "sortino": mean / downside * root if downside > 0 else None,
    }
    drawdown = _max_drawdown(curve, ns)
    metrics.update(drawdown)
    depth, money = drawdown["max_drawdown_pct"], drawdown["max_drawdown"]
    metrics["calmar"] = annualized / depth if annualized is not None and depth > 0 else None
    metrics["recovery_factor"] = (final - initial_capital) / money if money > 0 else None
    metrics.update(_trade_statistics(trades, len(values)))
    return {key: _finite(value) for key, value in metrics.items()}


def _max_drawdown(curve: np.ndarray, ns: np.ndarray) -> dict[str, float | str | None]:
    """The deepest fall below a running peak of `curve` (initial capital, then each bar's equity)."""
    peak = np.maximum.accumulate(curve)
    depth = (curve - peak) / peak
    trough = int(np.argmin(depth))
    if depth[trough] >= 0:
        return {"max_drawdown_pct": 0.0, "max_drawdown": 0.0, "max_drawdown_peak_time": None,
                "max_drawdown_trough_time": None, "max_drawdown_recovery_time": None}
    top = peak[trough]
    start = trough - int(np.argmax(curve[trough::-1] == top))  # the last time at the peak before the trough
    recovered = np.flatnonzero(curve[trough:] >= top)

    def bar_time(i: int) -> str:
        """curve[i] stands at bar i - 1's close; the initial capital (i = 0) at the first bar's time."""
        return _iso(ns[max(i - 1, 0)])

    return {
        "max_drawdown_pct": float(-depth[trough]),
        "max_drawdown": float(top - curve[trough]),
        "max_drawdown_peak_time": bar_time(start),
        "max_drawdown_trough_time": bar_time(trough),
        "max_drawdown_recovery_time": bar_time(trough + int(recovered[0])) if len(recovered) else None,
    }


def _trade_statistics(trades: Mapping[str, np.ndarray], bars: int) -> dict[str, float | int | None]:
    """Counts, win rate, profit factor and averages of the round trips' net P&L (a trade at exactly 0
    is neither a win nor a loss), holding periods, and the exposure: the fraction of bars with a
    position open (each bar is held by at most one trade, so the trades' bars add up)."""
    net = np.asarray(trades["net_pnl"], dtype=np.float64)
    hours = np.asarray(trades["holding_hours"], dtype=np.float64)
    held = np.asarray(trades["holding_bars"], dtype=np.float64)
    wins, losses = net > 0, net < 0
    gains, pains = net[wins].sum(), net[losses].sum()
    return {
        "trade_count": len(net),
        "winning_trades": int(wins.sum()),
        "losing_trades": int(losses.sum()),
        "win_rate": wins.sum() / len(net) if len(net) else None,
        "profit_factor": gains / -pains if losses.any() else None,
        "avg_win": _mean(net[wins]),
        "avg_loss": _mean(net[losses]),
        "largest_win": float(net[wins].max()) if wins.any() else None,
        "largest_loss": float(net[losses].min()) if losses.any() else None,
        "avg_holding_hours": _mean(hours),
        "avg_win_holding_hours": _mean(hours[wins]),
        "avg_loss_holding_hours": _mean(hours[losses]),
        "avg_holding_bars": _mean(held),
        "exposure": float(held.sum() / bars),
    }


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def _finite(value: object) -> object:
    """Python scalars for JSON; None for a non-finite number."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, np.integer):
        return int(value)
    number = float(value)
    return number if math.isfinite(number) else None


def _iso(ns: int) -> str:
    return str(np.datetime_as_string(np.datetime64(int(ns), "ns"), unit="s", timezone="UTC"))


def _nanoseconds(times: np.ndarray) -> np.ndarray:
    return np.asarray(times, dtype="datetime64[ns]").view(np.int64)
