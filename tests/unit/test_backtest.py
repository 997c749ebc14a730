"""The backtest engine and its metrics, against three oracles:

- KTRDR's own recorded runs (tests/fixtures/ktrdr-backtest/): fed KTRDR's per-bar probabilities and
  bars, the engine must make KTRDR's decisions, fills and trades exactly and its equity curve to
  1e-9; every metric KTRDR reported is either equal to ours or recomputed here by hand with KTRDR's
  defective formula, from our run, naming the defect (D1..D11 of the fixture README);
- backtesting.py, replaying KTRDR's recorded decisions under the same rules, for the equity curve;
- empyrical-reloaded, for Sharpe, Sortino, volatility, drawdown, annual return and Calmar.

Then hand-made series for each rule.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainhost.jobs.pipeline.backtest import (
    BUY,
    HOLD,
    SELL,
    BacktestConfig,
    BacktestRun,
    Signals,
    buy_and_hold,
    classification_signals,
    regression_signals,
    simulate,
)
from trainhost.jobs.pipeline.performance import bars_per_year, performance_metrics

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ktrdr-backtest"
RUNS = ("jan2018", "full_range", "full_range_shorts")
LONG_ONLY = ("jan2018", "full_range")
SIGNAL = {"BUY": BUY, "HOLD": HOLD, "SELL": SELL}
POSITION = {"LONG": 1, "FLAT": 0, "SHORT": -1}
HOUR = np.timedelta64(1, "h")
MONEY = 1e-9  # absolute tolerance on amounts of money
RTOL = 1e-9  # relative tolerance on ratios


# --- KTRDR's recorded runs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """One KTRDR run as recorded: bars with decisions, fills, trades, equity curve, metrics, config."""

    decisions: pd.DataFrame
    fills: pd.DataFrame
    trades: pd.DataFrame
    equity: pd.DataFrame
    metrics: dict
    config: dict


def as_times(column: pd.Series) -> np.ndarray:
    """ISO timestamps (UTC) as naive datetime64[ns]."""
    return pd.to_datetime(column, utc=True).dt.tz_localize(None).to_numpy("datetime64[ns]")


@cache
def recorded(name: str) -> Recorded:
    folder = FIXTURES / name
    return Recorded(
        pd.read_csv(folder / "decisions.csv.gz"), pd.read_csv(folder / "fills.csv.gz"),
        pd.read_csv(folder / "trades.csv.gz"), pd.read_csv(folder / "equity_curve.csv.gz"),
        json.loads((folder / "metrics.json").read_text()), json.loads((folder / "config.json").read_text()))


def ktrdr_config(name: str) -> BacktestConfig:
    """Our config with the costs and decision settings KTRDR used for the run."""
    config = recorded(name).config
    used, decisions = config["backtest_config"], config["decision_function_effective"]
    return BacktestConfig(initial_capital=used["initial_capital"], commission=used["commission"],
                          slippage=used["slippage"], confidence_threshold=decisions["confidence_threshold"],
                          min_signal_separation_hours=decisions["min_signal_separation_hours"],
                          position_awareness=decisions["position_awareness"],
                          allow_short_from_flat=decisions["allow_short_from_flat"])


def probabilities(name: str) -> np.ndarray:
    return recorded(name).decisions[["prob_BUY", "prob_HOLD", "prob_SELL"]].to_numpy()


@cache
def replay(name: str, mfe_from_closes: bool = False) -> BacktestRun:
    """Our engine on KTRDR's simulated bars and probabilities (its decisions.csv rows)."""
    bars = recorded(name).decisions
    high, low = (bars["close"], bars["close"]) if mfe_from_closes else (bars["high"], bars["low"])
    return simulate(as_times(bars["timestamp"]), bars["open"], high, low, bars["close"],
                    classification_signals(probabilities(name)), ktrdr_config(name))


def metrics_of(run: BacktestRun, config: BacktestConfig) -> dict:
    return performance_metrics(run.equity, run.times, run.trades, config.initial_capital, bars_per_year(run.times))


def returns_of(run: BacktestRun, config: BacktestConfig) -> np.ndarray:
    """Per-bar simple returns, the first against the initial capital."""
    curve = np.concatenate([[config.initial_capital], run.equity])
    return curve[1:] / curve[:-1] - 1


def entry_commissions(run: BacktestRun) -> np.ndarray:
    return run.fills["commission"][0::2]


def exit_fills(run: BacktestRun, column: str) -> np.ndarray:
    return run.fills[column][1::2]


# --- KTRDR's defective computations, by hand ----------------------------------------------------------


def ktrdr_curve(run: BacktestRun) -> np.ndarray:
    """KTRDR's equity curve of our run: a short's equity with its entry commission added back (D8);
    the last point before the end-of-data close (D7)."""
    curve = run.equity.copy()
    trades = run.trades
    for entry_bar, bars, side, commission in zip(trades["entry_bar"], trades["holding_bars"], trades["side"],
                                                 entry_commissions(run), strict=True):
        if side < 0:
            curve[entry_bar:entry_bar + bars] += commission
    forced = run.fills["forced"]
    if forced.any():  # the cash before the forced close, plus the position at the close
        curve[-1] += run.fills["commission"][forced][0] + run.fills["slippage"][forced][0]
    return curve


def ktrdr_returns(curve: np.ndarray) -> np.ndarray:
    """KTRDR's per-bar returns: pct_change of its curve, the first bar dropped."""
    return curve[1:] / curve[:-1] - 1


def ktrdr_drawdown(curve: np.ndarray) -> tuple[float, float]:
    """(pct, money): the running peak starts at the curve's first point, not the initial capital
    (D6); the money amount is pct × the final running peak (D5)."""
    peak = np.maximum.accumulate(curve)
    pct = float(-np.min((curve - peak) / peak))
    return pct, pct * peak[-1]


def ktrdr_net_pnl(run: BacktestRun) -> np.ndarray:
    """KTRDR's net P&L: gross less the exit commission only (D1)."""
    return run.trades["gross_pnl"] - exit_fills(run, "commission")


def ktrdr_holding_hours(run: BacktestRun) -> np.ndarray:
    """KTRDR's holding period: entry to the timestamp of the last bar held, one bar short (D9)."""
    trades = run.trades
    last_held = run.times[trades["entry_bar"] + trades["holding_bars"] - 1]
    return (last_held - trades["entry_time"]) / HOUR


def asked_years(name: str) -> float:
    """The calendar span KTRDR was asked for, in its 365.25-day years (D11)."""
    used = recorded(name).config["backtest_config"]
    days = (pd.Timestamp(used["end_date"]) - pd.Timestamp(used["start_date"])).days
    return days / 365.25


def ktrdr_by_hand(name: str) -> dict[str, float]:
    """All 22 of KTRDR's metrics, from our run through KTRDR's formulas."""
    run, config = replay(name), ktrdr_config(name)
    curve = ktrdr_curve(run)
    returns = ktrdr_returns(curve)
    root = math.sqrt(252)  # D3: hourly returns annualised as daily ones
    total = curve[-1] - config.initial_capital  # D7 and D8: the last point of KTRDR's curve
    pct = total / config.initial_capital
    annualized = (1 + pct) ** (1 / asked_years(name)) - 1  # D11
    drawdown_pct, drawdown = ktrdr_drawdown(curve)  # D5, D6
    net, hours = ktrdr_net_pnl(run), ktrdr_holding_hours(run)  # D1, D9
    wins, losses = net > 0, net < 0
    return {
        "total_return": total, "total_return_pct": pct, "annualized_return": annualized,
        "volatility": returns.std() * root, "sharpe_ratio": returns.mean() / returns.std() * root,
        "sortino_ratio": returns.mean() / returns[returns < 0].std() * root,  # D4: std of the negatives
        "max_drawdown": drawdown, "max_drawdown_pct": drawdown_pct,
        "calmar_ratio": annualized / drawdown_pct, "recovery_factor": total / drawdown,
        "total_trades": len(net), "winning_trades": wins.sum(), "losing_trades": losses.sum(),
        "win_rate": wins.mean(), "profit_factor": net[wins].sum() / -net[losses].sum(),
        "avg_win": net[wins].mean(), "avg_loss": net[losses].mean(),
        "largest_win": net.max(), "largest_loss": net.min(),
        "avg_holding_period": hours.mean(), "avg_win_holding_period": hours[wins].mean(),
        "avg_loss_holding_period": hours[losses].mean(),
    }


# --- decisions, fills, trades and equity against KTRDR's ----------------------------------------------


@pytest.mark.parametrize("name", RUNS)
def test_decisions_match_ktrdr(name):
    """Softmax passthrough, argmax, confidence, the four filters and the position: bar for bar."""
    bars = recorded(name).decisions
    signals = classification_signals(probabilities(name))
    np.testing.assert_array_equal(signals.raw, bars["raw_signal"].map(SIGNAL))
    np.testing.assert_array_equal(signals.confidence, bars["confidence"])
    run = replay(name)
    np.testing.assert_array_equal(run.decisions, bars["final_signal"].map(SIGNAL))
    np.testing.assert_array_equal(run.position, bars["position_at_decision"].map(POSITION))
    assert run.counts["nan_outputs"] == 0 and run.last_signal == 0 and run.warnings == []


@pytest.mark.parametrize("name", RUNS)
def test_fills_match_ktrdr(name):
    fills, theirs = replay(name).fills, recorded(name).fills
    np.testing.assert_array_equal(fills["time"], as_times(theirs["exec_time"]))
    before = theirs["position_before"].map(POSITION)
    np.testing.assert_array_equal(fills["side"], np.where(theirs["signal"] == "FORCE_CLOSE", -before,
                                                          theirs["signal"].map(SIGNAL)))
    np.testing.assert_array_equal(fills["quantity"], theirs["quantity"])
    np.testing.assert_array_equal(fills["price"], theirs["fill_price"])
    np.testing.assert_array_equal(fills["forced"], theirs["forced"])
    for ours, column in (("commission", "commission"), ("slippage", "slippage_cost"), ("cash_after", "cash_after")):
        np.testing.assert_allclose(fills[ours], theirs[column], rtol=0, atol=MONEY, err_msg=column)


@pytest.mark.parametrize("name", RUNS)
def test_trades_match_ktrdr(name):
    run, theirs = replay(name), recorded(name).trades
    trades = run.trades
    np.testing.assert_array_equal(np.where(trades["side"] > 0, "LONG", "SHORT"), theirs["side"])
    np.testing.assert_array_equal(trades["entry_time"], as_times(theirs["entry_time"]))
    np.testing.assert_array_equal(trades["exit_time"], as_times(theirs["exit_time"]))
    np.testing.assert_array_equal(trades["quantity"], theirs["quantity"])
    np.testing.assert_array_equal(trades["entry_price"], theirs["entry_price"])
    np.testing.assert_array_equal(trades["exit_price"], theirs["exit_price"])
    np.testing.assert_allclose(trades["gross_pnl"], theirs["gross_pnl"], rtol=0, atol=MONEY)
    # KTRDR's `commission` and `slippage` columns hold the exit side's only; ours both sides.
    np.testing.assert_allclose(exit_fills(run, "commission"), theirs["commission"], rtol=0, atol=MONEY)
    np.testing.assert_allclose(exit_fills(run, "slippage"), theirs["slippage"], rtol=0, atol=MONEY)
    np.testing.assert_allclose(trades["commission"], entry_commissions(run) + theirs["commission"], rtol=0, atol=MONEY)


@pytest.mark.parametrize("name", LONG_ONLY)
def test_long_only_equity_equals_ktrdr_on_every_bar(name):
    """No position is open at the end of these runs, so D7 does not apply and D8 has no short to touch."""
    run = replay(name)
    assert not run.fills["forced"].any()
    np.testing.assert_allclose(run.equity, recorded(name).equity["portfolio_value"], rtol=0, atol=MONEY)
    np.testing.assert_array_equal(run.position, recorded(name).equity["position"].map(POSITION))


def test_d8_short_equity_differs_by_the_entry_commission_add_back():
    """D8: while a short is open KTRDR's equity exceeds ours by exactly the short's entry commission,
    elsewhere they are equal; D7: KTRDR's last point is before the end-of-data cover, ours after."""
    run = replay("full_range_shorts")
    theirs = recorded("full_range_shorts").equity["portfolio_value"].to_numpy()
    add_back = np.zeros(len(run.equity))
    for entry_bar, bars, side, commission in zip(run.trades["entry_bar"], run.trades["holding_bars"],
                                                 run.trades["side"], entry_commissions(run), strict=True):
        if side < 0:
            add_back[entry_bar:entry_bar + bars] = commission
    assert (add_back > 0).sum() > 1000  # shorts are open on many bars
    np.testing.assert_allclose((theirs - run.equity)[:-1], add_back[:-1], rtol=0, atol=MONEY)
    forced = run.fills["forced"]
    assert forced[-1] and run.trades["side"][-1] == SELL and forced.sum() == 1
    costs_of_the_cover = run.fills["commission"][-1] + run.fills["slippage"][-1]
    assert theirs[-1] - run.equity[-1] == pytest.approx(add_back[-1] + costs_of_the_cover, abs=MONEY)
    np.testing.assert_allclose(ktrdr_curve(run), theirs, rtol=0, atol=MONEY)


@pytest.mark.parametrize("name", RUNS)
def test_mfe_mae_from_closes_equal_ktrdr(name):
    """KTRDR's excursions come from the closes of the bars held; ours from their highs and lows, so
    given the closes as high and low ours are KTRDR's, and otherwise they enclose them."""
    theirs = recorded(name).trades
    closes = replay(name, mfe_from_closes=True).trades
    np.testing.assert_allclose(closes["mfe"], theirs["max_favorable_excursion"], rtol=0, atol=MONEY)
    np.testing.assert_allclose(closes["mae"], theirs["max_adverse_excursion"], rtol=0, atol=MONEY)
    intrabar = replay(name).trades
    assert np.all(intrabar["mfe"] >= closes["mfe"]) and np.all(intrabar["mae"] <= closes["mae"])


# --- KTRDR's metrics: equal, or explained by a defect ----------------------------------------------------


@pytest.mark.parametrize("name", RUNS)
def test_every_ktrdr_metric_is_reproduced_by_hand(name):
    """All 22 of KTRDR's recorded metrics follow from our run through KTRDR's formulas (defects
    included): so each difference from ours is explained by the defect its formula names."""
    theirs = recorded(name).metrics
    by_hand = ktrdr_by_hand(name)
    assert set(by_hand) == set(theirs)
    for key, value in by_hand.items():
        assert value == pytest.approx(theirs[key], rel=RTOL, abs=MONEY), key


@pytest.mark.parametrize("name", RUNS)
def test_metrics_without_defect_equal_ktrdr(name):
    """The trade count never depends on a defect; in the long-only runs neither do the returns (no
    forced close: D7; no short: D8) nor the drawdown (it starts flat at the initial capital: D6; its
    peak is the curve's final peak: D5), nor so the recovery factor."""
    ours, theirs = metrics_of(replay(name), ktrdr_config(name)), recorded(name).metrics
    assert ours["trade_count"] == theirs["total_trades"]
    if name in LONG_ONLY:
        for key in ("total_return", "total_return_pct", "max_drawdown_pct", "max_drawdown", "recovery_factor"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-12), key


@pytest.mark.parametrize("name", RUNS)
def test_d3_volatility_and_sharpe_annualised_with_252(name):
    """D3: KTRDR annualises hourly returns with √252; ours use the data's bars per year, and equal
    empyrical's annual_volatility and sharpe_ratio with that annualization."""
    empyrical = pytest.importorskip("empyrical")
    run, config = replay(name), ktrdr_config(name)
    theirs = recorded(name).metrics
    returns = ktrdr_returns(ktrdr_curve(run))
    assert returns.std() * math.sqrt(252) == pytest.approx(theirs["volatility"], rel=RTOL)
    assert returns.mean() / returns.std() * math.sqrt(252) == pytest.approx(theirs["sharpe_ratio"], rel=RTOL)
    ours, bpy = metrics_of(run, config), bars_per_year(run.times)
    assert 6_000 < bpy < 6_400  # FX 1h: about 24 × 5 × 52 bars a year, not 252
    ours_returns = returns_of(run, config)
    assert ours["volatility"] == pytest.approx(empyrical.annual_volatility(ours_returns, annualization=bpy), rel=RTOL)
    assert ours["sharpe"] == pytest.approx(empyrical.sharpe_ratio(ours_returns, annualization=bpy), rel=RTOL)
    assert ours["sharpe"] != pytest.approx(theirs["sharpe_ratio"], rel=0.1)


@pytest.mark.parametrize("name", RUNS)
def test_d4_sortino_divides_by_std_of_negative_returns(name):
    """D4 (and D3): KTRDR's Sortino is mean / std(negative returns) × √252; ours divides by the
    downside deviation (root mean square of min(r, 0) over all bars), as empyrical's sortino_ratio."""
    empyrical = pytest.importorskip("empyrical")
    run, config = replay(name), ktrdr_config(name)
    returns = ktrdr_returns(ktrdr_curve(run))
    by_hand = returns.mean() / returns[returns < 0].std() * math.sqrt(252)
    assert by_hand == pytest.approx(recorded(name).metrics["sortino_ratio"], rel=RTOL)
    bpy = bars_per_year(run.times)
    expected = empyrical.sortino_ratio(returns_of(run, config), annualization=bpy)
    assert metrics_of(run, config)["sortino"] == pytest.approx(expected, rel=RTOL)


@pytest.mark.parametrize("name", RUNS)
def test_d1_trade_statistics_omit_the_entry_commission(name):
    """D1: KTRDR's net P&L is gross less the exit commission only, which inflates its win rate,
    profit factor and averages; ours subtracts both commissions, so the trades' net P&L adds up to
    the run's total return (KTRDR's overstates it by every entry commission)."""
    run, config = replay(name), ktrdr_config(name)
    theirs = recorded(name)
    np.testing.assert_allclose(ktrdr_net_pnl(run), theirs.trades["net_pnl"], rtol=0, atol=MONEY)
    net = run.trades["net_pnl"]
    np.testing.assert_allclose(net, ktrdr_net_pnl(run) - entry_commissions(run), rtol=0, atol=MONEY)
    assert net.sum() == pytest.approx(run.equity[-1] - config.initial_capital, abs=1e-6)
    assert ktrdr_net_pnl(run).sum() - net.sum() == pytest.approx(entry_commissions(run).sum(), abs=1e-6)
    ours = metrics_of(run, config)
    wins, losses = net > 0, net < 0
    assert ours["winning_trades"] == wins.sum() <= theirs.metrics["winning_trades"]
    assert ours["win_rate"] == pytest.approx(wins.mean()) and ours["win_rate"] <= theirs.metrics["win_rate"]
    assert ours["profit_factor"] == pytest.approx(net[wins].sum() / -net[losses].sum(), rel=RTOL)
    assert ours["profit_factor"] < theirs.metrics["profit_factor"]
    assert ours["largest_loss"] == pytest.approx(net.min()) and ours["largest_loss"] < theirs.metrics["largest_loss"]


@pytest.mark.parametrize("name", RUNS)
def test_d9_holding_periods_one_bar_short(name):
    """D9: KTRDR measures a holding period up to the timestamp of the last bar held, not to the exit
    fill; ours count every bar held (their sum is the bars with a position) and the wall clock to the
    exit (a forced close one bar spacing after the last timestamp)."""
    run, config = replay(name), ktrdr_config(name)
    theirs = recorded(name)
    np.testing.assert_allclose(ktrdr_holding_hours(run), theirs.trades["holding_period_hours"], rtol=0, atol=1e-12)
    trades = run.trades
    assert trades["holding_bars"].sum() == np.count_nonzero(run.position)
    exit_moment = np.where(trades["forced"], trades["exit_time"] + HOUR, trades["exit_time"])
    np.testing.assert_allclose(trades["holding_hours"], (exit_moment - trades["entry_time"]) / HOUR)
    assert np.all(trades["holding_hours"] > ktrdr_holding_hours(run))
    ours = metrics_of(run, config)
    assert ours["avg_holding_hours"] == pytest.approx(trades["holding_hours"].mean())
    assert ours["avg_holding_hours"] > theirs.metrics["avg_holding_period"]
    assert ours["exposure"] == pytest.approx(np.mean(run.position != 0))


@pytest.mark.parametrize("name", RUNS)
def test_d11_annualised_return_over_the_asked_span(name):
    """D11: KTRDR compounds over the calendar span asked for (start to end date), not over the bars
    simulated; ours is the growth rate over n / bars_per_year years, empyrical's annual_return, and
    Calmar follows (empyrical's calmar_ratio)."""
    empyrical = pytest.importorskip("empyrical")
    run, config = replay(name), ktrdr_config(name)
    theirs = recorded(name).metrics
    by_hand = (1 + theirs["total_return_pct"]) ** (1 / asked_years(name)) - 1
    assert by_hand == pytest.approx(theirs["annualized_return"], rel=RTOL)
    ours, bpy, returns = metrics_of(run, config), bars_per_year(run.times), returns_of(run, config)
    assert ours["annualized_return"] == pytest.approx(empyrical.annual_return(returns, annualization=bpy), rel=RTOL)
    assert ours["calmar"] == pytest.approx(empyrical.calmar_ratio(returns, annualization=bpy), rel=RTOL)
    simulated_years = (run.times[-1] + HOUR - run.times[0]) / np.timedelta64(1, "D") / 365.25
    assert len(run.equity) / bpy == pytest.approx(simulated_years, rel=1e-12)
    assert simulated_years < asked_years(name)  # KTRDR's warm-up bars and an end at midnight (D12) are not simulated


def test_d7_d8_total_return_of_a_run_ending_short():
    """D7 and D8: KTRDR's total return is its last equity point, taken before the end-of-data cover
    and with the short's entry commission added back; ours is the cash the run ends with."""
    name = "full_range_shorts"
    run, config = replay(name), ktrdr_config(name)
    theirs = recorded(name).metrics
    before_cover = run.equity[-1] + run.fills["commission"][-1] + run.fills["slippage"][-1]
    add_back = entry_commissions(run)[-1]
    assert before_cover + add_back - config.initial_capital == pytest.approx(theirs["total_return"], abs=MONEY)
    ours = metrics_of(run, config)
    assert ours["total_return"] == pytest.approx(run.fills["cash_after"][-1] - config.initial_capital, abs=MONEY)
    assert ours["total_return"] < theirs["total_return"]


def test_d8_drawdown_of_the_short_run_follows_its_curve():
    """The shorts run's drawdown differs only because KTRDR's curve does (D8, D7): the same
    computation on each curve gives each value; ours equals empyrical's max_drawdown."""
    empyrical = pytest.importorskip("empyrical")
    name = "full_range_shorts"
    run, config = replay(name), ktrdr_config(name)
    assert ktrdr_drawdown(ktrdr_curve(run))[0] == pytest.approx(recorded(name).metrics["max_drawdown_pct"], rel=RTOL)
    ours = metrics_of(run, config)
    assert ours["max_drawdown_pct"] == pytest.approx(-empyrical.max_drawdown(returns_of(run, config)), rel=RTOL)
    assert ours["max_drawdown_pct"] > recorded(name).metrics["max_drawdown_pct"]


# --- second oracles: backtesting.py and empyrical ------------------------------------------------------


def backtesting_py_equity(name: str) -> np.ndarray:
    """backtesting.py replaying KTRDR's recorded decisions under KTRDR's rules: spread = slippage
    (entries slipped adversely), the integer size computed by KTRDR's rule from the cash and the fill
    bar's open, and a commission that adds the exit slippage (backtesting.py exits at the raw open).
    Open trades are not closed at the end (backtesting.py would close them at the last open)."""
    from backtesting import Backtest, Strategy

    bars, config = recorded(name).decisions, ktrdr_config(name)
    decisions = bars["final_signal"].map(SIGNAL).to_numpy()
    assert decisions[0] == HOLD  # backtesting.py first calls the strategy on the second bar
    opens = bars["open"].to_numpy()
    c, s = config.commission, config.slippage
    exiting = [False]

    def commission(size: float, price: float) -> float:
        if exiting[0]:  # raw open in; the slipped exit's proceeds out
            return abs(size) * price * (s + (1 - math.copysign(s, size)) * c)
        return abs(size) * price * c  # price already includes the spread

    class Replay(Strategy):
        def init(self):
            pass

        def next(self):
            i = len(self.data) - 1
            signal = decisions[i]
            if signal == HOLD or i + 1 == len(opens):
                return
            exiting[0] = bool(self.position)
            if self.position:
                self.position.close()
            else:
                size = int(config.position_size * self.equity / (1 + c) / opens[i + 1])
                (self.buy if signal == BUY else self.sell)(size=size)

    frame = bars[["open", "high", "low", "close"]].rename(columns=str.capitalize)
    frame.index = pd.DatetimeIndex(as_times(bars["timestamp"]))
    test = Backtest(frame, Replay, cash=config.initial_capital, spread=s, commission=commission)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Some trades remain open")
        warnings.filterwarnings("ignore", message="DatetimeIndex.dayofweek")  # inside backtesting.py's statistics
        stats = test.run()
    return stats["_equity_curve"]["Equity"].to_numpy()


@pytest.mark.parametrize("name", RUNS)
def test_backtesting_py_gives_the_same_equity(name):
    pytest.importorskip("backtesting")
    run = replay(name)
    theirs = backtesting_py_equity(name)
    ours = run.equity.copy()
    if run.fills["forced"].any():  # backtesting.py's last point still holds the position
        ours[-1] += run.fills["commission"][-1] + run.fills["slippage"][-1]
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=MONEY)


def random_walk_bars(n: int, seed: int, freq: str = "1h") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]]) * (1 + rng.normal(0, 0.001, n))
    spread = np.abs(rng.normal(0, 0.005, n)) * close
    return {"times": pd.date_range("2021-01-01", periods=n, freq=freq).to_numpy("datetime64[ns]"), "open": open_,
            "high": np.maximum(open_, close) + spread, "low": np.minimum(open_, close) - spread, "close": close}


def runs_for_empyrical() -> list[tuple[str, BacktestRun, BacktestConfig]]:
    """The recorded runs, buy-and-hold on their bars (a first-bar return against the initial
    capital), and a random-walk run with shorts."""
    cases = [(name, replay(name), ktrdr_config(name)) for name in RUNS]
    bars = recorded("full_range").decisions
    config = BacktestConfig()
    cases.append(("buy_and_hold", buy_and_hold(as_times(bars["timestamp"]), bars["open"], bars["close"], config),
                  config))
    walk = random_walk_bars(3000, seed=5)
    rng = np.random.default_rng(6)
    logits = rng.normal(0, 1.5, (3000, 3))
    shorts = BacktestConfig(allow_short_from_flat=True, confidence_threshold=0.5)
    cases.append(("random_walk", simulate(walk["times"], walk["open"], walk["high"], walk["low"], walk["close"],
                                          classification_signals(logits), shorts), shorts))
    return cases


def test_risk_metrics_equal_empyrical():
    empyrical = pytest.importorskip("empyrical")
    for label, run, config in runs_for_empyrical():
        ours, bpy, returns = metrics_of(run, config), bars_per_year(run.times), returns_of(run, config)
        expected = {
            "volatility": empyrical.annual_volatility(returns, annualization=bpy),
            "sharpe": empyrical.sharpe_ratio(returns, annualization=bpy),
            "sortino": empyrical.sortino_ratio(returns, annualization=bpy),
            "max_drawdown_pct": -empyrical.max_drawdown(returns),
            "annualized_return": empyrical.annual_return(returns, annualization=bpy),
            "calmar": empyrical.calmar_ratio(returns, annualization=bpy),
        }
        for key, value in expected.items():
            assert ours[key] == pytest.approx(value, rel=RTOL), f"{label}: {key}"
        assert ours["trade_count"] > 0, label


# --- rules on hand-made series ----------------------------------------------------------------------------


def flat_bars(n: int, price: float = 100.0, freq: str = "1h") -> dict[str, np.ndarray]:
    times = pd.date_range("2024-01-01", periods=n, freq=freq).to_numpy("datetime64[ns]")
    prices = np.full(n, price)
    return {"times": times, "open": prices, "high": prices, "low": prices, "close": prices}


def run_on(bars: dict[str, np.ndarray], raw: list[int], confidence: list[float], config: BacktestConfig,
           kind: str = "classification") -> BacktestRun:
    signals = Signals(np.array(raw), np.array(confidence, dtype=np.float64), kind)
    return simulate(bars["times"], bars["open"], bars["high"], bars["low"], bars["close"], signals, config)


def test_filters_apply_in_ktrdr_order():
    """Confidence, then separation from the last fill, then position awareness, then short from flat;
    a signal held by several filters counts against the first."""
    bars = flat_bars(16)
    hi, lo = 0.9, 0.5
    raw = [BUY, BUY, SELL, SELL, BUY, HOLD, BUY, SELL, SELL, HOLD, HOLD, HOLD, SELL, SELL, HOLD, HOLD]
    conf = [lo, hi, lo, hi, hi, hi, hi, hi, hi, hi, hi, hi, hi, lo, hi, hi]
    run = run_on(bars, raw, conf, BacktestConfig(confidence_threshold=0.6))
    # bar 0 low confidence; 1 BUY fills at 2; 2 low confidence (also within separation); 3, 4 within 4 h of the
    # fill at 2; 6 BUY while long; 7 SELL fills at 8; 8 within separation; 12 SELL while flat; 13 low confidence.
    np.testing.assert_array_equal(run.decisions, [0, BUY, 0, 0, 0, 0, 0, SELL, 0, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(run.position, [0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    assert run.counts == {"nan_outputs": 0, "below_confidence": 3, "within_separation": 3, "same_side_as_position": 1,
                          "short_from_flat": 1, "redundant_at_fill": 0, "entry_too_small": 0}
    np.testing.assert_array_equal(run.fills["bar"], [2, 8])


def test_separation_is_wall_clock_from_the_last_fill():
    """Four hours of wall clock, not four bars: across a gap in the bars the next signal passes (at
    exactly four hours); without the gap it is held."""
    raw, conf = [BUY, HOLD, SELL, HOLD, HOLD, HOLD], [0.9] * 6
    bars = flat_bars(6)
    np.testing.assert_array_equal(run_on(bars, raw, conf, BacktestConfig()).fills["bar"], [1, 5])  # forced close
    bars["times"] = bars["times"] + np.array([0, 0, 3, 3, 3, 3]) * HOUR  # bar 2 is 4 h after the fill at bar 1
    np.testing.assert_array_equal(run_on(bars, raw, conf, BacktestConfig()).fills["bar"], [1, 3])


def test_position_awareness_off_lets_redundant_signals_reach_the_fill():
    """Without position awareness a BUY while long is not filtered; it cannot add to the position, so
    the fill step drops it (counted) and it does not restart the separation clock."""
    bars = flat_bars(10)
    config = BacktestConfig(position_awareness=False, min_signal_separation_hours=0)
    run = run_on(bars, [BUY, HOLD, BUY, HOLD, SELL, HOLD, HOLD, HOLD, HOLD, HOLD], [0.9] * 10, config)
    assert run.counts["redundant_at_fill"] == 1 and run.counts["same_side_as_position"] == 0
    np.testing.assert_array_equal(run.fills["bar"], [1, 5])


def test_no_reversal_in_one_fill():
    """SELL while long only closes it and BUY while short only covers; the new side needs a signal of its own."""
    bars = flat_bars(12)
    config = BacktestConfig(allow_short_from_flat=True, min_signal_separation_hours=0)
    raw = [BUY, HOLD, SELL, HOLD, SELL, HOLD, BUY, HOLD, HOLD, HOLD, HOLD, HOLD]
    run = run_on(bars, raw, [0.9] * 12, config)
    np.testing.assert_array_equal(run.position, [0, 1, 1, 0, 0, -1, -1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(run.fills["side"], [BUY, SELL, SELL, BUY])
    np.testing.assert_array_equal(run.trades["side"], [BUY, SELL])
    assert not run.fills["forced"].any()


def test_force_close_updates_the_final_equity():
    """D7 fixed: the last equity point is the cash after the end-of-data close at the last close."""
    bars = flat_bars(10)
    bars["close"] = np.linspace(100, 109, 10)
    bars["high"], bars["low"] = bars["close"] + 1, np.minimum(bars["open"], bars["close"]) - 1
    config = BacktestConfig()
    run = run_on(bars, [BUY] + [HOLD] * 9, [0.9] * 10, config)
    c, s = config.commission, config.slippage
    qty = int(0.25 * 100_000 / (1 + c) / 100.0)
    entry = 100.0 * (1 + s)
    cash = 100_000 - entry * qty * (1 + c)
    assert run.equity[-2] == pytest.approx(cash + 108.0 * qty)
    exit_price = 109.0 * (1 - s)
    final = cash + exit_price * qty * (1 - c)
    assert run.equity[-1] == pytest.approx(final, abs=MONEY)
    assert run.fills["cash_after"][-1] == run.equity[-1] and run.fills["forced"][-1]
    assert run.position[-1] == 1  # held through the last bar
    trade = {key: values[0] for key, values in run.trades.items()}
    assert trade["net_pnl"] == pytest.approx(final - 100_000, abs=MONEY)
    assert trade["holding_bars"] == 9 and trade["holding_hours"] == 9.0
    assert trade["mfe"] == pytest.approx((110.0 - entry) * qty) and trade["mae"] == pytest.approx((99.0 - entry) * qty)
    assert run.warnings == []


def test_signal_on_the_last_bar_is_reported():
    """D15: a signal decided on the last bar has no next open; it is reported, not silently dropped."""
    run = run_on(flat_bars(4), [HOLD, HOLD, HOLD, BUY], [0.9] * 4, BacktestConfig())
    assert run.last_signal == BUY and len(run.fills["bar"]) == 0
    assert any("last bar" in warning for warning in run.warnings)


def test_entry_too_small_for_one_unit_is_not_filled():
    run = run_on(flat_bars(4, price=1e6), [BUY, HOLD, HOLD, HOLD], [0.9] * 4, BacktestConfig())
    assert run.counts["entry_too_small"] == 1 and len(run.fills["bar"]) == 0 and run.warnings


def test_nan_confidence_is_held_and_counted():
    """D14: a NaN model output is HOLD (whatever the raw signal says) and is counted and reported."""
    signals = classification_signals(np.array([[np.nan, 0.5, 0.5], [0.7, 0.2, 0.1]]))
    np.testing.assert_array_equal(signals.raw, [HOLD, BUY])
    assert np.isnan(signals.confidence[0]) and signals.confidence[1] == 0.7
    run = run_on(flat_bars(4), [BUY, BUY, HOLD, HOLD], [np.nan, np.nan, 0.9, 0.9], BacktestConfig())
    np.testing.assert_array_equal(run.decisions, [0, 0, 0, 0])
    assert run.counts["nan_outputs"] == 2 and any("NaN" in warning for warning in run.warnings)
    assert np.isnan(regression_signals(np.array([np.nan]), BacktestConfig()).confidence[0])


def test_logits_are_softmaxed_and_probabilities_pass_through():
    outputs = np.array([[2.0, 1.0, 0.0], [0.1, 0.2, 0.7], [2.0, -0.5, -0.5]])
    signals = classification_signals(outputs)
    np.testing.assert_array_equal(signals.raw, [BUY, SELL, BUY])
    e = np.exp([2.0, 1.0, 0.0])
    assert signals.confidence[0] == pytest.approx(e[0] / e.sum())
    assert signals.confidence[1] == 0.7
    assert signals.confidence[2] == pytest.approx(np.exp(2.0) / (np.exp(2.0) + 2 * np.exp(-0.5)))
    with pytest.raises(ValueError, match="BUY, HOLD, SELL"):
        classification_signals(np.zeros((3, 4)))


def test_regression_thresholds():
    """τ = 0.003 × 1.5 = 0.0045: strictly beyond ±τ trades; confidence min(|p| / 3τ, 1)."""
    config = BacktestConfig()
    tau = 0.0045
    predictions = np.array([tau, 0.0046, -0.0046, -tau, 0.02, 0.0])
    signals = regression_signals(predictions, config)
    np.testing.assert_array_equal(signals.raw, [HOLD, BUY, SELL, HOLD, BUY, HOLD])
    np.testing.assert_allclose(signals.confidence, [1 / 3, 0.0046 / 0.0135, 0.0046 / 0.0135, 1 / 3, 1.0, 0.0])
    wider = regression_signals(predictions, BacktestConfig(round_trip_cost=0.002, min_edge_multiplier=3.0))
    np.testing.assert_array_equal(wider.raw, [HOLD, HOLD, HOLD, HOLD, BUY, HOLD])


def test_regression_may_short_from_flat_and_has_no_confidence_threshold():
    """As KTRDR: a regression model's SELL opens a short from flat even with allow_short_from_flat
    off, and its confidence (here 0.34 < 0.6) filters nothing."""
    signals = regression_signals(np.array([-0.0046, 0, 0, 0, 0, 0]), BacktestConfig())
    bars = flat_bars(6)
    run = simulate(bars["times"], bars["open"], bars["high"], bars["low"], bars["close"], signals, BacktestConfig())
    np.testing.assert_array_equal(run.position, [0, -1, -1, -1, -1, -1])
    assert run.fills["forced"][-1] and run.trades["side"][0] == SELL


def test_buy_and_hold_arithmetic():
    """All the cash at the first open (KTRDR's sizing rule with position_size 1), costs on both sides,
    closed at the last close."""
    times = pd.date_range("2024-01-01", periods=3, freq="1D").to_numpy("datetime64[ns]")
    config = BacktestConfig(initial_capital=10_000)
    run = buy_and_hold(times, np.array([100.0, 110.0, 120.0]), np.array([105.0, 115.0, 90.0]), config)
    qty = 99  # int(10_000 / 1.001 / 100) = int(99.9)
    paid = 100.05 * qty + 100.05 * qty * 0.001
    cash = 10_000 - paid
    received = 90 * 0.9995 * qty * (1 - 0.001)
    np.testing.assert_allclose(run.equity, [cash + 105 * qty, cash + 115 * qty, cash + received], rtol=1e-13)
    np.testing.assert_array_equal(run.fills["quantity"], [qty, qty])
    assert run.trades["net_pnl"][0] == pytest.approx(received - paid)
    assert run.trades["holding_bars"][0] == 3 and run.trades["holding_hours"][0] == 72.0
    np.testing.assert_array_equal(run.position, [1, 1, 1])


def test_bars_per_year_from_the_data_calendar():
    hourly = pd.date_range("2023-01-02", "2023-12-31 23:00", freq="1h")
    assert bars_per_year(hourly.to_numpy()) == pytest.approx(365.25 * 24, rel=1e-12)  # 24/7 (crypto)
    weekdays = hourly[hourly.day_of_week < 5]
    fx = bars_per_year(weekdays.to_numpy())
    span_hours = (weekdays[-1] - weekdays[0]) / pd.Timedelta(hours=1) + 1
    assert fx == pytest.approx(len(weekdays) * 365.25 * 24 / span_hours, rel=1e-12)
    assert 6_100 < fx < 6_400
    days = pd.bdate_range("2015-01-01", "2024-12-31")
    assert 255 < bars_per_year(days.to_numpy()) < 262  # weekdays (exchange holidays would bring it to ~252)
    ns = hourly.to_numpy("datetime64[ns]").view(np.int64)
    assert bars_per_year(ns) == bars_per_year(hourly.to_numpy())
    with pytest.raises(ValueError):
        bars_per_year(hourly[:1].to_numpy())


def test_d5_d6_drawdown_from_the_initial_capital_and_its_own_peak():
    """D6: a loss against the initial capital before the curve's first peak counts; D5: the money
    drawdown is that episode's peak minus trough, not the percentage times the final peak."""
    times = pd.date_range("2024-01-01", periods=4, freq="1h").to_numpy("datetime64[ns]")
    no_trades = {"net_pnl": [], "holding_hours": [], "holding_bars": []}
    below_start = np.array([90.0, 95.0, 100.0, 99.0])
    ours = performance_metrics(below_start, times, no_trades, 100.0, 8766.0)
    assert ours["max_drawdown_pct"] == pytest.approx(0.10) and ours["max_drawdown"] == pytest.approx(10.0)
    assert ktrdr_drawdown(below_start)[0] == pytest.approx(0.01)
    assert ours["max_drawdown_peak_time"] == "2024-01-01T00:00:00Z"  # the initial capital
    assert ours["max_drawdown_recovery_time"] == "2024-01-01T02:00:00Z"
    later_peak = np.array([80.0, 200.0, 190.0, 195.0])
    ours = performance_metrics(later_peak, times, no_trades, 100.0, 8766.0)
    assert ours["max_drawdown_pct"] == pytest.approx(0.2) and ours["max_drawdown"] == pytest.approx(20.0)
    assert ours["max_drawdown_trough_time"] == "2024-01-01T00:00:00Z"
    assert ours["max_drawdown_recovery_time"] == "2024-01-01T01:00:00Z"
    assert ktrdr_drawdown(np.concatenate([[100.0], later_peak]))[1] == pytest.approx(0.2 * 200.0)


def test_metrics_are_json_with_none_where_undefined():
    """A run without trades: no profit factor, win rate, Sharpe or Sortino (not 999999, not NaN)."""
    run = run_on(flat_bars(10), [HOLD] * 10, [0.9] * 10, BacktestConfig())
    metrics = performance_metrics(run.equity, run.times, run.trades, 100_000, bars_per_year(run.times))
    json.dumps(metrics, allow_nan=False)
    for key in ("profit_factor", "win_rate", "sharpe", "sortino", "calmar", "avg_win", "largest_loss",
                "avg_holding_hours", "max_drawdown_peak_time"):
        assert metrics[key] is None, key
    assert metrics["trade_count"] == 0 and metrics["exposure"] == 0.0 and metrics["max_drawdown"] == 0.0
    winners_only = {"net_pnl": [5.0], "holding_hours": [1.0], "holding_bars": [1]}
    bars = random_walk_bars(50, seed=1)
    metrics = performance_metrics(bars["close"] * 1000, bars["times"], winners_only, 100_000, 8766.0)
    assert metrics["profit_factor"] is None and metrics["win_rate"] == 1.0
    json.dumps(metrics, allow_nan=False)


def test_frames():
    run = replay("jan2018")
    trades, fills, equity = run.trades_frame(), run.fills_frame(), run.equity_frame()
    assert list(trades["side"].unique()) == ["LONG"] and set(fills["side"]) == {"BUY", "SELL"}
    assert len(equity) == len(run.equity) and str(equity.index.tz) == "UTC"
    assert equity.index[0] == pd.Timestamp(recorded("jan2018").decisions["timestamp"][0])


@pytest.mark.parametrize(("field", "value"), [
    ("initial_capital", 0), ("initial_capital", float("inf")), ("commission", -0.001), ("commission", 1.0),
    ("slippage", float("nan")), ("slippage", "0.1"), ("position_size", 0.0), ("position_size", 1.5),
    ("confidence_threshold", 1.2), ("min_signal_separation_hours", -1), ("round_trip_cost", 0),
    ("min_edge_multiplier", -1.5), ("position_awareness", "yes"), ("allow_short_from_flat", 1), ("commission", True),
])
def test_bad_config_values_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        BacktestConfig(**{field: value})


def test_bad_inputs_raise():
    bars = flat_bars(4)
    signals = Signals(np.zeros(4), np.ones(4))
    with pytest.raises(ValueError, match="increasing"):
        simulate(bars["times"][::-1], bars["open"], bars["high"], bars["low"], bars["close"], signals,
                 BacktestConfig())
    for column, bad in (("open", np.nan), ("high", np.inf), ("low", 0.0), ("close", -1.0)):
        broken = dict(bars, **{column: np.where(np.arange(4) == 2, bad, bars[column])})
        with pytest.raises(ValueError, match=f"{column} prices must be finite and positive"):
            simulate(broken["times"], broken["open"], broken["high"], broken["low"], broken["close"], signals,
                     BacktestConfig())
    with pytest.raises(ValueError, match="close prices"):
        buy_and_hold(bars["times"], bars["open"], np.array([1.0, 1.0, np.nan, 1.0]), BacktestConfig())
    with pytest.raises(ValueError, match="one signal per bar"):
        simulate(bars["times"], bars["open"], bars["high"], bars["low"], bars["close"], Signals([0], [1.0]),
                 BacktestConfig())
    with pytest.raises(ValueError, match="Signals.raw"):
        Signals(np.array([256]), np.array([1.0]))  # not wrapped to 0 by the int8 cast
    with pytest.raises(ValueError, match="Signals.kind"):
        Signals(np.array([0]), np.array([1.0]), "ranking")
