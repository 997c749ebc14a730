"""The experiment as a terminal prints it (jobs/experiment_text.py): one row per trial with its
parameters, status, objective and validation metrics, a walk-forward's out-of-sample columns, the
best trial marked. The views are checked against the API's own response model first, so they have
the shape get_experiment gives."""

from __future__ import annotations

import re

import numpy as np
import pytest

from trainhost.jobs.experiment_text import experiment_text, progress_text, short_names, trial_table
from trainhost.jobs.pipeline.metric_labels import format_metric
from trainhost.jobs.pipeline.performance import bars_per_year, performance_metrics
from trainhost.status_api.responses import Experiment

LR, DROPOUT = "training.learning_rate", "model.architecture.dropout"


def as_served(view: dict) -> dict:
    """`view` with the fields GET /experiments/<id> derives from the others, checked against its model."""
    for row in view["rows"]:
        row.update(fold=None, session_id=row["sessions"][0], metrics=row["validation"], backtest=row["oos"])
    kind = "sweep_walk_forward" if view["walk_forward"] else "sweep"
    progress = {"done": view["children"]["done"], "total": view["children"]["total"],
                "eta_seconds": view["eta_seconds"]}
    return Experiment.model_validate({**view, "kind": kind, "progress": progress}).model_dump()


def grid_view(status: str = "completed") -> dict:
    rows = []
    for trial, (lr, dropout) in enumerate((lr, d) for lr in (0.001, 0.01) for d in (0.1, 0.3)):
        accuracy = [0.41, 0.47, 0.39, 0.44][trial]
        rows.append({"trial": trial, "params": {LR: lr, DROPOUT: dropout}, "status": "completed",
                     "sessions": [f"g-t{trial}"], "errors": [], "validation": {"val_accuracy": accuracy,
                                                                                "val_loss": 1.1 - accuracy},
                     "objective": accuracy, "oos": None})
    rows[3].update(status="failed", errors=["loss became NaN at epoch 2, batch 5"], objective=None, validation={})
    test = {"total_return_pct": 0.0123, "sharpe": 0.8, "max_drawdown_pct": 0.031, "trade_count": 12}
    view = {"experiment_id": "g", "name": "grid", "created_at": "2024-01-01T00:00:00+00:00", "status": status,
            "search": "grid", "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "walk_forward": None, "children": {"total": 4, "done": 4, "by_status": {"completed": 3, "failed": 1}},
            "eta_seconds": 0.0, "best": {"trial": 1, "params": rows[1]["params"], "objective": 0.47,
                                         "test_backtest": test},
            "rows": rows, "folds": [], "summary_folder": "/srv/experiments/g"}
    return as_served(view)


@pytest.fixture(scope="module")
def oos() -> list[dict]:
    """Two trials' out-of-sample metrics, computed from seeded curves as the summary job does."""
    rng = np.random.default_rng(3)
    times = np.arange(np.datetime64("2018-01-01T00"), np.datetime64("2018-01-01T00") + 2400, np.timedelta64(1, "h"))
    found = []
    for drift in (0.0002, -0.0001):
        equity = 10_000 * np.exp(np.cumsum(rng.normal(drift, 0.002, len(times))))
        trades = {"net_pnl": rng.normal(5, 40, 30), "holding_hours": np.full(30, 6.0), "holding_bars": np.full(30, 6)}
        found.append(performance_metrics(equity, times, trades, 10_000.0, bars_per_year(times)))
    return found


def walk_forward_view(oos: list[dict]) -> dict:
    rows = [{"trial": trial, "params": {"indicators.rsi_14.period": period, "indicators.adx_14.period": 14},
             "status": "completed", "sessions": [f"w-t{trial}-f{f}" for f in range(3)], "errors": [],
             "validation": {"val_accuracy": 0.4, "val_loss": 1.0}, "objective": metrics["sharpe"], "oos": metrics}
            for trial, (period, metrics) in enumerate(zip((7, 21), oos, strict=True))]
    best = max(rows, key=lambda row: row["objective"])
    view = {"experiment_id": "w", "name": "squad", "created_at": "2024-01-01T00:00:00+00:00", "status": "running",
            "search": "grid", "objective": {"metric": "oos.sharpe", "direction": "maximize"},
            "walk_forward": {"folds": [], "metrics": best["oos"]},
            "children": {"total": 9, "done": 6, "by_status": {"completed": 6, "running": 1, "queued": 2}},
            "eta_seconds": 42.4, "best": {"trial": best["trial"], "params": best["params"],
                                          "objective": best["objective"], "test_backtest": best["oos"]},
            "rows": rows, "folds": [], "summary_folder": None}
    return as_served(view)


def columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_a_grid_prints_one_row_per_trial_with_its_params_and_the_best_marked():
    view = grid_view()
    lines = trial_table(view["rows"], view["best"], False, "val_accuracy")
    assert columns(lines[0]) == ["trial", "learning_rate", "dropout", "status", "objective", "val acc", "val loss"]
    body = [columns(line) for line in lines[1:]]
    assert [row[0] for row in body] == ["0", "*1", "2", "3"]
    assert body[1] == ["*1", "0.001", "0.3", "completed", "0.4700", "0.470", "0.6300"]
    assert body[3] == ["3", "0.01", "0.3", "failed", "—", "—", "—"]
    assert len({len(line) for line in lines[:3]}) == 1  # aligned columns


def test_the_whole_grid_text_names_the_objective_best_test_split_errors_and_folder():
    text = experiment_text(grid_view())
    assert text.startswith("experiment g (grid): completed, 4/4 sessions ended (completed 3, failed 1)")
    assert "objective: val_accuracy, maximize (validation split)" in text
    assert "best: trial 1 (learning_rate=0.001, dropout=0.3), val_accuracy 0.4700" in text
    assert ("test split backtest of the best trial (reported for it only): total return % 1.23 %, Sharpe 0.800, "
            "max drawdown % 3.10 %, trades 12") in text
    assert "trial 3 failed: loss became NaN at epoch 2, batch 5" in text
    assert text.endswith("folder: /srv/experiments/g")


def test_a_walk_forward_shows_the_stitched_out_of_sample_columns(oos):
    view = walk_forward_view(oos)
    lines = trial_table(view["rows"], view["best"], True, "oos.sharpe")
    assert columns(lines[0]) == ["trial", "rsi_14.period", "adx_14.period", "status", "objective", "val acc",
                                 "val loss", "OOS return %", "OOS Sharpe", "OOS max DD %", "OOS trades"]
    for line, metrics in zip(lines[1:], oos, strict=True):
        cells = columns(line)
        assert cells[4] == cells[8] == format_metric(metrics["sharpe"], "ratio")
        assert cells[7] == format_metric(metrics["total_return_pct"], "fraction")
        assert cells[9] == format_metric(metrics["max_drawdown_pct"], "fraction") and cells[10] == "30"
    best = view["best"]["trial"]
    assert columns(lines[1 + best])[0] == f"*{best}" and columns(lines[2 - best])[0] == str(1 - best)
    text = experiment_text(view)
    assert "(stitched out-of-sample backtest)" in text and "test split backtest" not in text
    assert "folder:" not in text  # not summarised yet


def test_progress_names_the_children_by_status_and_the_eta(oos):
    assert progress_text(walk_forward_view(oos)) == "completed 6, queued 2, running 1, ETA 42s"
    assert progress_text(grid_view()) == "completed 3, failed 1"  # ended: no ETA


def test_no_best_trial_is_said_in_words():
    view = grid_view()
    view["best"] = None
    assert "best: none (no trial completed with an objective)" in experiment_text(view)
    assert "*" not in "\n".join(trial_table(view["rows"], None, False, "val_accuracy"))


def test_short_names_keep_paths_apart():
    assert short_names([LR, DROPOUT]) == ["learning_rate", "dropout"]
    assert short_names(["indicators.rsi_14.period", "indicators.adx_14.period", "training.labels.zigzag_threshold"]
                       ) == ["rsi_14.period", "adx_14.period", "zigzag_threshold"]
    assert short_names(["a.x", "x"]) == ["a.x", "x"]
