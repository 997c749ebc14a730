"""Backtest simulation: `simulate` (the compiled bar loop plus its fills, trades and equity arrays) on
precomputed signals, 5,000 and 1,000,000 synthetic 1h bars, against two libraries replaying the
same decisions.

Baselines, same run, same bars and decisions (ours after its filters; the libraries only execute):

- vectorbt's `Portfolio.from_signals` (numba-compiled too): long and short entries and exits on the
  bar they fill at, at its open, 25 % of cash in whole units, the same commission and slippage, plus
  the equity curve (`value()`); its compilation is warmed up before timing;
- backtesting.py (a Python loop per bar), KTRDR's rules as tests/unit/test_backtest.py sets them up
  (spread = slippage, KTRDR's integer size, exit slippage in the commission); its equity is checked
  against ours in the 5,000-bar case.

Plus the per-bar time of ours from 100,000 to 1,000,000 bars (linear: <= 1.5x).

End to end inside the job (`end_to_end`): the features of `v3_multi_indicator`, the model's outputs
in one batched pass, the simulation and the metrics (`backtest_model`), for the model KTRDR trained
(tests/fixtures/ktrdr-backtest/model) on the 5,000 real EURUSD 1h bars and on 100k / 1M synthetic
ones. Baseline, same run: the same path with one model call per bar, as KTRDR's engine infers
(KTRDR's whole engine took 2.86 s for these 5,000 bars where it was recorded; not re-run here).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from bench.features import best_of
from bench.report import Measure, failed
from bench.synthetic import ohlcv

SMALL, LARGE, SCALING_FROM = 5_000, 1_000_000, 100_000
HORIZON, EDGE = 200, 5.0  # the synthetic model's foresight (bars) and how much it adds to the right logit


class Case:
    """Synthetic bars with random model outputs, their signals, and our run of them."""

    def __init__(self, bars: int, seed: int = 11):
        from trainhost.jobs.pipeline.backtest import BacktestConfig, classification_signals

        frame = ohlcv(bars, seed=seed)
        self.config = BacktestConfig(allow_short_from_flat=True)
        self.times = frame.index.to_numpy("datetime64[ns]")
        self.open, self.high, self.low, self.close = (frame[c].to_numpy() for c in ("open", "high", "low", "close"))
        # A model that knows the sign of the next HORIZON bars' return, blurred by noise. Random outputs
        # would pay the costs of every trade without an edge: over 1M bars the equity would shrink until
        # entries cannot buy one unit, and the late bars would be a different, cheaper workload.
        ahead = np.sign(np.concatenate([self.close[HORIZON:] - self.close[:-HORIZON], np.zeros(HORIZON)]))
        logits = np.random.default_rng(seed).normal(0.0, 1.5, (bars, 3))
        logits[:, 0] += EDGE * (ahead > 0)
        logits[:, 2] += EDGE * (ahead < 0)
        self.signals = classification_signals(logits)
        self.frame = frame
        self.run = self.simulate()

    def simulate(self):
        from trainhost.jobs.pipeline.backtest import simulate

        return simulate(self.times, self.open, self.high, self.low, self.close, self.signals, self.config)


def vectorbt_replay(case: Case) -> np.ndarray:
    """vectorbt executing our decisions: long/short entries and exits on the bar they fill at (the one
    after the decision), priced at its open; its equity curve."""
    import vectorbt as vbt

    from trainhost.jobs.pipeline.backtest import BUY, SELL

    def at_fill(mask: np.ndarray) -> np.ndarray:
        return np.concatenate([[False], mask[:-1]])

    decided, held = case.run.decisions, case.run.position
    config = case.config
    portfolio = vbt.Portfolio.from_signals(
        case.close, at_fill((decided == BUY) & (held == 0)), at_fill((decided == SELL) & (held > 0)),
        at_fill((decided == SELL) & (held == 0)), at_fill((decided == BUY) & (held < 0)), price=case.open,
        fees=config.commission,
        slippage=config.slippage, size=config.position_size, size_type="percent", size_granularity=1,
        init_cash=config.initial_capital, freq="1h")
    return portfolio.value().to_numpy()


def backtesting_py_replay(case: Case) -> np.ndarray:
    """backtesting.py executing our decisions under KTRDR's rules; its equity curve. backtesting.py
    first asks the strategy on its second bar, so a copy of the first bar, an hour earlier, leads
    (its equity point dropped)."""
    from backtesting import Backtest, Strategy

    from trainhost.jobs.pipeline.backtest import BUY, HOLD

    decisions, opens, config = np.concatenate([[HOLD], case.run.decisions]), case.open, case.config
    opens = np.concatenate([opens[:1], opens])
    c, s = config.commission, config.slippage
    exiting = [False]

    def commission(size: float, price: float) -> float:
        if exiting[0]:
            return abs(size) * price * (s + (1 - math.copysign(s, size)) * c)
        return abs(size) * price * c

    class Replay(Strategy):
        def init(self):
            pass

        def next(self):
            i = len(self.data) - 1
            if decisions[i] == HOLD or i + 1 == len(opens):
                return
            exiting[0] = bool(self.position)
            if self.position:
                self.position.close()
            else:
                size = int(config.position_size * self.equity / (1 + c) / opens[i + 1])
                if size >= 1:  # as the engine: an entry too small for one unit is not filled
                    (self.buy if decisions[i] == BUY else self.sell)(size=size)

    frame = case.frame[["open", "high", "low", "close"]].rename(columns=str.capitalize)
    frame.index = frame.index.tz_localize(None)
    lead = frame.iloc[:1].set_axis(frame.index[:1] - np.timedelta64(1, "h"))
    frame = pd.concat([lead, frame])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(frame, Replay, cash=config.initial_capital, spread=s, commission=commission).run()
    return stats["_equity_curve"]["Equity"].to_numpy()[1:]


class JobCase:
    """The evaluation's backtest of KTRDR's v3_multi_indicator model on `bars`."""

    def __init__(self, bars: pd.DataFrame):
        import torch

        from tests.helpers.fixtures import REPO
        from trainhost.jobs.pipeline.ktrdr_import import ktrdr_metadata
        from trainhost.jobs.pipeline.model import build_model
        from trainhost.jobs.pipeline.strategy import Strategy

        folder = REPO / "tests" / "fixtures" / "ktrdr-backtest" / "model"
        meta = ktrdr_metadata(folder)
        self.strategy = Strategy.from_dict(meta["strategy"])
        self.normalization = meta["normalization"]
        self.model = build_model(meta["model"])
        self.model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
        self.model.eval()
        self.bars = bars

    def backtest(self, per_bar: bool = False) -> dict:
        """Features, outputs, simulation and metrics: the result's `backtest` section."""
        from trainhost.jobs.pipeline import model_backtest
        from trainhost.jobs.pipeline.features import build_feature_matrix

        matrix = build_feature_matrix(self.strategy, {self.strategy.base_timeframe: self.bars})
        if not per_bar:
            return model_backtest.backtest_model(self.model, self.strategy, self.normalization, self.bars, matrix,
                                                 None, None, "bench")[0]
        outputs = per_bar_outputs(self.model, matrix, self.normalization)
        config = model_backtest.backtest_config(self.strategy.raw.get("decisions") or {}, None)
        return model_backtest.backtest_outputs(self.bars, outputs, self.strategy.task, config).summary


def per_bar_outputs(model, features: pd.DataFrame, normalization: dict) -> np.ndarray:
    """The model called once per bar, as KTRDR's engine does (the baseline)."""
    import torch

    from trainhost.jobs.pipeline.features import apply_normalization

    matrix = apply_normalization(features, normalization).to_numpy(dtype=np.float32)
    outputs = np.full((len(matrix), 3), np.nan)
    with torch.inference_mode():
        for i, row in enumerate(matrix):
            if not np.isnan(row).any():
                outputs[i] = model(torch.tensor(row[None, :])).numpy()[0]
    return outputs


def eurusd_bars() -> pd.DataFrame:
    """The `backtesting` package's 5,000 EURUSD 1h bars, as `trainhost sample-data` writes them."""
    from backtesting.test import EURUSD

    frame = EURUSD.rename(columns=str.lower)[["open", "high", "low", "close", "volume"]].astype(np.float64)
    frame.index = pd.DatetimeIndex(frame.index, name="timestamp").tz_localize("UTC")
    return frame


def end_to_end(quick: bool) -> list[Measure]:
    real = JobCase(eurusd_bars())
    ours = best_of(real.backtest, 11)
    looped = best_of(lambda: real.backtest(per_bar=True), 1 if quick else 3)
    same = real.backtest()["metrics"] == real.backtest(per_bar=True)["metrics"]
    summary = real.backtest()
    measures = [Measure(
        "backtest.job.5k_eurusd_bars.vs_per_bar_inference", ours, "ms", looped, "same path, one model call per bar",
        "<= 20 ms, same metrics as the per-bar path", lambda m: m.value <= 20 and same,
        note=f"{len(real.bars):,} bars, {summary['metrics']['trade_count']} trades; KTRDR's engine: 2,860 ms "
             f"for these bars where it was recorded ({2860 / ours:,.0f}x); metrics equal per-bar: {same}")]
    sizes = (SCALING_FROM, LARGE)
    timed = {n: best_of(JobCase(ohlcv(n, seed=5)).backtest, 3 if n == LARGE and not quick else 2) for n in sizes}
    per_bar = {n: timed[n] / n for n in sizes}
    measures.append(Measure(
        "backtest.job.1M_bars.vs_100k", timed[LARGE], "ms", timed[SCALING_FROM] * LARGE / SCALING_FROM,
        "100k bars' time x 10", "<= 1,000 ms, per-bar time grows <= 1.5x (linear)",
        lambda m: m.value <= 1000 and per_bar[LARGE] <= 1.5 * per_bar[SCALING_FROM],
        note=f"per-bar time {per_bar[SCALING_FROM] * 1e6:.0f} ns at 100k, {per_bar[LARGE] * 1e6:.0f} ns at 1M"))
    return measures


def run(quick: bool = False) -> list[Measure]:
    measures: list[Measure] = end_to_end(quick)
    sizes = (SMALL, SCALING_FROM, LARGE)
    reps = {SMALL: 21, SCALING_FROM: 7, LARGE: 5 if not quick else 3}
    cases = {n: Case(n) for n in sizes}
    ours = {n: best_of(cases[n].simulate, reps[n]) for n in sizes}
    trades = {n: len(cases[n].run.trades["net_pnl"]) for n in sizes}

    try:
        vectorbt_replay(Case(200))  # compile vectorbt's kernels before timing
        vbt = {n: best_of(lambda n=n: vectorbt_replay(cases[n]), max(3, reps[n] // 2)) for n in (SMALL, LARGE)}
        vbt_diff = float(np.max(np.abs(vectorbt_replay(cases[SMALL]) / cases[SMALL].run.equity - 1)))
    except ImportError as exc:
        vbt = None
        measures.append(failed("backtest.vs_vectorbt", f"vectorbt could not be imported ({exc}): pip install vectorbt"))
    bt_sizes = (SMALL,) if quick else (SMALL, LARGE)
    bt = {n: best_of(lambda n=n: backtesting_py_replay(cases[n]), 3 if n == SMALL else 1) for n in bt_sizes}
    check = cases[SMALL].run
    equity = check.equity.copy()
    if check.fills["forced"].any():  # backtesting.py's last point is before the end-of-data close
        equity[-1] += check.fills["commission"][-1] + check.fills["slippage"][-1]
    bt_diff = float(np.max(np.abs(backtesting_py_replay(cases[SMALL]) / equity - 1)))

    for n in (SMALL, LARGE):
        size = f"{n // 1000}k_bars" if n < LARGE else "1M_bars"
        per_bar = (f"{ours[n] * 1e6 / n:.1f} ns/bar ours, {trades[n]:,} trades, "
                   f"{cases[n].run.counts['entry_too_small']} entries too small to fill")
        if vbt is not None:
            measures.append(Measure(
                f"backtest.simulate.{size}.vs_vectorbt", ours[n], "ms", vbt[n], "vectorbt from_signals + value()",
                "ratio <= 1 (at least as fast)", lambda m: m.ratio <= 1,
                note=f"{per_bar}; vectorbt {vbt[n] * 1e6 / n:.1f} ns/bar (executes our filtered decisions only)"
                     + (f"; its equity vs ours: max relative difference {vbt_diff:.1e} (it sizes 25 % of cash "
                        "after costs, KTRDR's rule before slippage)" if n == SMALL else "")))
        if n in bt:
            note = f"{per_bar}; backtesting.py {bt[n] * 1e6 / n:.0f} ns/bar"
            if n == SMALL:
                note += f"; its equity vs ours: max relative difference {bt_diff:.1e}"
            measures.append(Measure(
                f"backtest.simulate.{size}.vs_backtesting_py", ours[n], "ms", bt[n], "backtesting.py, same rules",
                "ratio <= 0.01 (>= 100x faster), same equity at 5k", lambda m: m.ratio <= 0.01 and bt_diff < 1e-12,
                note=note))
    small, large = ours[SCALING_FROM] / SCALING_FROM, ours[LARGE] / LARGE
    measures.append(Measure(
        f"backtest.simulate.scaling_{SCALING_FROM // 1000}k_to_1M", large / small, "x per-bar time", None, "",
        "per-bar time grows <= 1.5x (linear)", lambda m: m.value <= 1.5,
        note=f"per-bar time: {small * 1e6:.1f} ns at {SCALING_FROM:,} bars, {large * 1e6:.1f} ns at {LARGE:,}"))
    return measures
