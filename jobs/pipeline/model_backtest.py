"""A trained model judged as a trader would: its outputs on every bar of a range, one batched forward
pass, replayed by the backtest engine beside a buy-and-hold of the same bars and costs
(docs/ktrdr-semantics.md §12).

The features come in for every loaded bar, history before the range included, so the first bar of
the range is decided with warm indicators, and a backtest of a sub-range equals the same bars of a
longer one. A bar whose inputs are incomplete has no output (NaN) and is held.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from trainhost.jobs.pipeline.artifacts import write_atomic
from trainhost.jobs.pipeline.backtest import (
    BacktestRun,
    buy_and_hold,
    classification_signals,
    regression_signals,
    simulate,
)
from trainhost.jobs.pipeline.backtest_settings import BacktestConfig, backtest_config
from trainhost.jobs.pipeline.features import apply_normalization
from trainhost.jobs.pipeline.metrics import predict_logits
from trainhost.jobs.pipeline.performance import bars_per_year, performance_metrics
from trainhost.jobs.pipeline.strategy import Strategy

# Label sources whose classes are trade signals in KTRDR's order (0 BUY, 1 HOLD, 2 SELL).
SIGNAL_SOURCES = ("zigzag", "triple_barrier")
FOLDER = "evaluations"


@dataclass
class BacktestReport:
    """The result's `backtest` section, and the two runs behind it (their trades and curves go to files)."""

    summary: dict[str, Any]
    run: BacktestRun
    baseline: BacktestRun


def refusal(task: str, label_source: str) -> str | None:
    """Why a model's outputs are not trade signals (None when they are)."""
    if task == "regression" or label_source in SIGNAL_SOURCES:
        return None
    return (f"not backtested: a {label_source} model predicts market states, not trade signals "
            "(its classification metrics stand)")


def model_outputs(model: nn.Module, features: pd.DataFrame, normalization: dict, sequence_length: int = 0
                  ) -> np.ndarray:
    """The model's outputs on every row of `features` (one per bar, in order), in one batched pass;
    NaN rows where an input (or, for LSTM/GRU, any row of the window ending there) is incomplete."""
    matrix = apply_normalization(features, normalization).to_numpy(dtype=np.float32)
    complete = ~np.isnan(matrix).any(axis=1)
    if sequence_length > 1:
        gaps = np.concatenate([[0], np.cumsum(~complete)])
        ends = np.arange(sequence_length - 1, len(matrix))
        valid = ends[gaps[ends + 1] - gaps[ends + 1 - sequence_length] == 0]
        windows = valid[:, None] + np.arange(1 - sequence_length, 1)[None, :]
        raw = predict_logits(model, np.nan_to_num(matrix), windows=windows) if len(valid) else None
    else:
        valid = np.flatnonzero(complete)
        raw = predict_logits(model, matrix[valid]) if len(valid) else None
    width = raw.shape[1] if raw is not None else 1
    outputs = np.full((len(matrix), width), np.nan)
    if raw is not None:
        outputs[valid] = raw
    return outputs


def backtest_outputs(bars: pd.DataFrame, outputs: np.ndarray, task: str, config: BacktestConfig,
                     first: pd.Timestamp | None = None) -> BacktestReport:
    """Replay `outputs` (one row per bar of `bars`) from the first bar at or after `first` that has
    one, to the last bar; the baseline is a buy-and-hold of the same bars with the same costs."""
    start = 0 if first is None else int(np.searchsorted(bars.index, first))
    has_output = np.flatnonzero(~np.isnan(outputs).any(axis=1))
    has_output = has_output[has_output >= start]
    warnings = []
    if len(has_output) == 0 or len(bars) - has_output[0] < 2:
        raise ValueError("fewer than 2 bars of the range have complete model inputs: nothing to backtest")
    begin = int(has_output[0])
    if begin > start:
        warnings.append(f"the first {begin - start} bar(s) of the range have no complete model inputs (too little "
                        f"data before {bars.index[start]} for the indicators to warm up) and are not simulated")
    window = bars.iloc[begin:]
    values = outputs[begin:]
    signals = regression_signals(values, config) if task == "regression" else classification_signals(values)
    times = window.index.to_numpy(dtype="datetime64[ns]")
    columns = [window[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close")]
    run = simulate(times, *columns, signals, config)
    baseline = buy_and_hold(times, columns[0], columns[3], config)
    per_year = bars_per_year(times)
    summary = {
        "config": config.model_dump(),
        "bars": len(window),
        "first_bar": window.index[0].isoformat(),
        "last_bar": window.index[-1].isoformat(),
        "metrics": performance_metrics(run.equity, times, run.trades, config.initial_capital, per_year),
        "baseline": performance_metrics(baseline.equity, times, baseline.trades, config.initial_capital, per_year),
        "filtered": run.counts,
        "warnings": warnings + run.warnings,
    }
    return BacktestReport(summary, run, baseline)


def backtest_model(model: nn.Module, strategy: Strategy, normalization: dict, bars: pd.DataFrame,
                   matrix: pd.DataFrame, first: pd.Timestamp | None, overrides: Mapping[str, Any] | None,
                   name: str) -> tuple[dict[str, Any], BacktestReport | None]:
    """The `backtest` section of a result for `model` on `bars` from `first` (its features: `matrix`,
    one row per bar, history before `first` included), and the report whose files go to
    `evaluations/<name>/`; (a section saying why, None) for a model whose outputs are not signals."""
    config = backtest_config(strategy.raw.get("decisions") or {}, overrides)
    reason = refusal(strategy.task, strategy.labels.source)
    if reason is not None:
        return {"config": config.model_dump(), "metrics": None, "baseline": None, "skipped": reason,
                "warnings": [reason]}, None
    length = strategy.model.sequence_length if strategy.model.is_sequence else 0
    outputs = model_outputs(model, matrix, normalization, length)
    report = backtest_outputs(bars, outputs, strategy.task, config, first)
    before = 0 if first is None else int(np.searchsorted(bars.index, first))
    needed = max(strategy.history_required, strategy.warmup_bars)
    if before < needed:
        report.summary["warnings"].insert(0, f"only {before} bar(s) of data before {bars.index[before]}; the strategy "
                                             f"asks for {needed} of history (history_required, indicator warm-up)")
    report.summary["folder"] = f"{FOLDER}/{name}"
    return report.summary, report


def write_backtest(folder: Path, report: BacktestReport) -> dict[str, str]:
    """`trades.csv`, `equity.csv` (with the buy-and-hold curve and the drawdown beside ours) and
    `backtest.json` into `folder`, each written to a temporary name and renamed; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    trades = report.run.trades_frame()
    for column in ("entry_time", "exit_time"):
        trades[column] = pd.DatetimeIndex(trades[column]).tz_localize("UTC").map(pd.Timestamp.isoformat)
    equity = report.run.equity_frame()
    equity["buy_and_hold"] = report.baseline.equity
    peak = np.maximum.accumulate(np.concatenate([[report.summary["config"]["initial_capital"]], equity["equity"]]))
    equity["drawdown_pct"] = equity["equity"].to_numpy() / peak[1:] - 1.0
    files = {"trades": folder / "trades.csv", "equity": folder / "equity.csv", "summary": folder / "backtest.json"}
    texts = {"trades": trades.to_csv(index=False, float_format="%.10g"),
             "equity": equity.to_csv(float_format="%.10g", date_format="%Y-%m-%dT%H:%M:%S%z"),
             "summary": json.dumps(report.summary, indent=1)}
    for name, text in texts.items():
        write_atomic(files[name], lambda f, text=text: f.write(text.encode()))
    return {name: str(path) for name, path in files.items()}
