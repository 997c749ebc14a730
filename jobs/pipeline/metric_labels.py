"""The backtest metrics a person reads, in the order they are shown, with a label and a unit; and
how a value of each unit is written. Light (no numpy): the dashboard and the command line share it.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

Unit = Literal["money", "fraction", "ratio", "count", "hours", "time"]


class MetricLabel(NamedTuple):
    key: str
    label: str
    unit: Unit


BACKTEST_METRICS: tuple[MetricLabel, ...] = (
    MetricLabel("total_return", "total return", "money"),
    MetricLabel("total_return_pct", "total return %", "fraction"),
    MetricLabel("annualized_return", "annualised return", "fraction"),
    MetricLabel("volatility", "volatility (annualised)", "fraction"),
    MetricLabel("sharpe", "Sharpe", "ratio"),
    MetricLabel("sortino", "Sortino", "ratio"),
    MetricLabel("calmar", "Calmar", "ratio"),
    MetricLabel("max_drawdown_pct", "max drawdown %", "fraction"),
    MetricLabel("max_drawdown", "max drawdown", "money"),
    MetricLabel("max_drawdown_peak_time", "drawdown peak", "time"),
    MetricLabel("max_drawdown_trough_time", "drawdown trough", "time"),
    MetricLabel("max_drawdown_recovery_time", "recovered", "time"),
    MetricLabel("trade_count", "trades", "count"),
    MetricLabel("win_rate", "win rate", "fraction"),
    MetricLabel("profit_factor", "profit factor", "ratio"),
    MetricLabel("avg_win", "average win", "money"),
    MetricLabel("avg_loss", "average loss", "money"),
    MetricLabel("largest_win", "largest win", "money"),
    MetricLabel("largest_loss", "largest loss", "money"),
    MetricLabel("avg_holding_hours", "average holding", "hours"),
    MetricLabel("exposure", "exposure", "fraction"),
)


def format_metric(value: Any, unit: Unit) -> str:
    """`value` written for a reader: money with thousands separators and cents, fractions as
    percentages, times to the minute (UTC); '—' where there is none."""
    if value is None:
        return "—"
    if unit == "time":
        return str(value)[:16].replace("T", " ")
    number = float(value)
    if unit == "money":
        return f"{number:,.2f}"
    if unit == "fraction":
        return f"{number * 100:.2f} %"
    if unit == "count":
        return f"{int(number):,}"
    if unit == "hours":
        return f"{number:,.1f} h"
    return f"{number:.3f}"
