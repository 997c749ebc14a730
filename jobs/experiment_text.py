"""An experiment as a person reads it in a terminal: its progress in one line, and at the end the
comparison — one row per trial (its parameters, status, objective, validation metrics and, for a
walk-forward, the stitched out-of-sample backtest), the best trial marked. Pure Python on the
experiment's view (trainhost.jobs.experiments.get_experiment), so the shell client stays light.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from trainhost.jobs.pipeline.metric_labels import BACKTEST_METRICS, format_metric

BEST_MARK = "*"
# The stitched out-of-sample metrics a walk-forward row shows: key, column header.
OOS_COLUMNS = (("total_return_pct", "OOS return %"), ("sharpe", "OOS Sharpe"),
               ("max_drawdown_pct", "OOS max DD %"), ("trade_count", "OOS trades"))
TEST_KEYS = ("total_return_pct", "sharpe", "max_drawdown_pct", "trade_count")
UNITS = {metric.key: metric.unit for metric in BACKTEST_METRICS}
LABELS = {metric.key: metric.label for metric in BACKTEST_METRICS}


def progress_text(view: Mapping[str, Any]) -> str:
    """The children by status and the ETA, e.g. `completed 2, running 1, queued 1, ETA 40s`."""
    counts = view["children"]["by_status"]
    parts = [f"{status} {count}" for status, count in sorted(counts.items(), key=lambda item: -item[1])]
    if view.get("eta_seconds") is not None and view["children"]["done"] < view["children"]["total"]:
        parts.append(f"ETA {view['eta_seconds']:.0f}s")
    return ", ".join(parts)


def experiment_text(view: Mapping[str, Any]) -> str:
    """The whole comparison: a heading, the table, the best trial, failed trials' errors, the folder."""
    objective = view["objective"]
    children = view["children"]
    lines = [f"experiment {view['experiment_id']} ({view['name']}): {view['status']}, "
             f"{children['done']}/{children['total']} sessions ended ({progress_text(view)})",
             f"objective: {objective['metric']}, {objective['direction']} "
             f"({'stitched out-of-sample backtest' if objective['metric'].startswith('oos.') else 'validation split'})",
             ""]
    lines += trial_table(view["rows"], view.get("best"), bool(view.get("walk_forward")), objective["metric"])
    lines.append("")
    lines += _best_lines(view)
    lines += [f"trial {row['trial']} {row['status']}: {row['errors'][0]}" for row in view["rows"] if row["errors"]]
    if view.get("summary_folder"):
        lines.append(f"folder: {view['summary_folder']}")
    return "\n".join(lines)


def trial_table(rows: Sequence[Mapping[str, Any]], best: Mapping[str, Any] | None, walk_forward: bool,
                metric: str) -> list[str]:
    """One line per trial under a header; the best trial's number marked with `*`."""
    paths = list(rows[0]["params"]) if rows else []
    headers = ["trial", *short_names(paths), "status", "objective", "val acc", "val loss"]
    if walk_forward:
        headers += [header for _, header in OOS_COLUMNS]
    best_trial = best["trial"] if best else None
    table = []
    for row in rows:
        validation, oos = row.get("validation") or {}, row.get("oos") or {}
        cells = [f"{BEST_MARK if row['trial'] == best_trial else ''}{row['trial']}",
                 *(_param(row["params"].get(path)) for path in paths), row["status"],
                 _objective(row.get("objective"), metric), _number(validation.get("val_accuracy"), 3),
                 _number(validation.get("val_loss"), 4)]
        if walk_forward:
            cells += [format_metric(oos.get(key), UNITS[key]) for key, _ in OOS_COLUMNS]
        table.append(cells)
    left = {headers.index("status")}
    widths = [max(len(headers[i]), *(len(cells[i]) for cells in table)) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) if i in left else cell.rjust(width)
                         for i, (cell, width) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(headers), *(line(cells) for cells in table)]


def short_names(paths: Sequence[str]) -> list[str]:
    """Each dotted path by its last part, or as many last parts as keep the names apart
    (`indicators.rsi_14.period`, `indicators.adx_14.period` → `rsi_14.period`, `adx_14.period`)."""
    names = []
    for path in paths:
        parts = path.split(".")
        for depth in range(1, len(parts) + 1):
            tail = ".".join(parts[-depth:])
            if not any(other != path and other.split(".")[-depth:] == parts[-depth:] for other in paths):
                break
        names.append(tail)
    return names


def _best_lines(view: Mapping[str, Any]) -> list[str]:
    best = view.get("best")
    if best is None:
        return ["best: none (no trial completed with an objective)"]
    shown = ", ".join(f"{name}={_param(value)}" for name, value in
                      zip(short_names(list(best["params"])), best["params"].values(), strict=True))
    lines = [f"best: trial {best['trial']}{f' ({shown})' if shown else ''}, {view['objective']['metric']} "
             f"{_objective(best['objective'], view['objective']['metric'])}"]
    if best.get("test_backtest") and not view.get("walk_forward"):
        metrics = best["test_backtest"]
        lines.append("test split backtest of the best trial (reported for it only): " + ", ".join(
            f"{LABELS[key]} {format_metric(metrics.get(key), UNITS[key])}" for key in TEST_KEYS))
    return lines


def _objective(value: float | None, metric: str) -> str:
    key = metric.removeprefix("oos.")
    if metric.startswith("oos.") and key in UNITS:
        return format_metric(value, UNITS[key])
    return _number(value, 4)


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _param(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    return json.dumps(value)
