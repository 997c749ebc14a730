"""A training's or an evaluation's result as a person reads it in a terminal: the model, the data, the
test metrics and the backtest beside buy-and-hold. Pure Python on the result dict (no numpy), so the
shell client prints it as the in-process command does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from trainhost.jobs.pipeline.metric_labels import BACKTEST_METRICS, format_metric

COLUMNS = ("strategy", "buy & hold")


def result_text(result: Mapping[str, Any]) -> str:
    """Every section the result has: model, device, data, training, test metrics, backtest."""
    lines = []
    if result.get("model_path"):
        lines.append(f"model:     {result['model_path']}")
    device = result.get("device") or {}
    if device:
        lines.append(f"device:    {device.get('type')} ({device.get('name')})")
    lines += _data_lines(result.get("data") or {})
    training = result.get("training_metrics")
    if training:
        lines.append(f"training:  {training['epochs_trained']} epochs, {training['samples_per_second']:,.0f} "
                     f"samples/s, final val accuracy {training['final_val_accuracy']:.3f}")
    test = result.get("test_metrics") or result.get("metrics")
    if test:
        lines += _test_lines(test, result.get("task"), (result.get("labels") or {}).get("mapping") or {})
    if result.get("backtest"):
        lines += backtest_lines(result["backtest"])
    return "\n".join(lines)


def _data_lines(data: Mapping[str, Any]) -> list[str]:
    if "split_sizes" in data:
        return [f"data:      {json.dumps(data['split_sizes'])}"]
    if "bars" in data:
        return [f"data:      {data['bars']:,} bars {_when(data.get('first_bar'))} .. {_when(data.get('last_bar'))}, "
                f"{data.get('usable_bars', 0):,} with labels"]
    return []


def _test_lines(test: Mapping[str, Any], task: str | None, mapping: Mapping[str, str]) -> list[str]:
    if task == "regression" or "zero_baseline_mae" in test:
        return [f"test:      sign accuracy {test['test_accuracy']:.3f} (majority sign "
                f"{test['majority_baseline_accuracy']:.3f}), Huber(δ=1) loss {test['test_loss']:.3g} "
                f"(predict zero {test['zero_baseline_loss']:.3g}), MAE {test['mae']:.3g} "
                f"(predict zero {test['zero_baseline_mae']:.3g}), {test['n_samples']:,} samples"]
    lines = [f"test:      accuracy {test['test_accuracy']:.3f} (majority-class baseline "
             f"{test['majority_baseline_accuracy']:.3f}), loss {test['test_loss']:.4f}, "
             f"weighted F1 {test['f1_score']:.3f}, {test['n_samples']:,} samples"]
    if "confusion_matrix" in test:
        names = "/".join(mapping.values()) or "classes"
        lines.append(f"confusion matrix (rows true {names}): {test['confusion_matrix']}")
    return lines


def backtest_lines(backtest: Mapping[str, Any]) -> list[str]:
    """The backtest's span, its metrics and buy-and-hold's side by side in aligned columns, and its
    warnings; or why there is none."""
    warnings = list(backtest.get("warnings") or [])
    if backtest.get("skipped"):
        lines = [f"backtest:  {backtest['skipped']}"]
        warnings = [w for w in warnings if w != backtest["skipped"]]
    else:
        capital = (backtest.get("config") or {}).get("initial_capital")
        lines = [f"backtest:  {backtest.get('bars', 0):,} bars {_when(backtest.get('first_bar'))} .. "
                 f"{_when(backtest.get('last_bar'))}, initial capital {format_metric(capital, 'money')}"]
        lines += metrics_table(backtest.get("metrics") or {}, backtest.get("baseline") or {})
    lines += [f"warning:   {warning}" for warning in warnings]
    return lines


def metrics_table(strategy: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    """One row per backtest metric: label, the strategy's value, buy-and-hold's value."""
    rows = [(m.label, format_metric(strategy.get(m.key), m.unit), format_metric(baseline.get(m.key), m.unit))
            for m in BACKTEST_METRICS]
    label_width = max(len(label) for label, _, _ in rows)
    widths = [max(len(COLUMNS[i]), *(len(row[i + 1]) for row in rows)) for i in range(2)]

    def line(label: str, ours: str, theirs: str) -> str:
        return f"  {label:<{label_width}}  {ours:>{widths[0]}}  {theirs:>{widths[1]}}".rstrip()

    return [line("", *COLUMNS), *(line(*row) for row in rows)]


def _when(iso: str | None) -> str:
    return format_metric(iso, "time")
