"""The job that closes an experiment once every child has ended: each walk-forward trial's folds'
test-window backtests stitched into one out-of-sample curve with its metrics, and the experiment's
folder (`experiments_dir/<id>/`: manifest.json, rows.json, trial_<k>_equity.csv) written. For a tpe
search it is first the driver: each run tells the study how the trials that ended did and asks the
next batch, enqueued with this job again behind it, until the search has asked all its trials.

A fold's backtest starts from the initial capital; stitched, each fold continues from where the one
before ended (its curve scaled by that level), so the curve compounds across folds as one account
trading the test windows in turn would. The folds' trades are scaled the same way.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from redis import Redis
from rq import get_current_job

from trainhost.config import Settings, load_settings
from trainhost.jobs import experiment_study, experiments
from trainhost.jobs.pipeline.artifacts import write_atomic
from trainhost.jobs.pipeline.performance import bars_per_year, performance_metrics
from trainhost.jobs.sessions import FINISHED_STATUSES

STOP_MARGIN_S = 30  # beyond the stop grace: the kill and RQ's bookkeeping after it
STOP_POLL_S = 0.5


def summarize_experiment(experiment_id: str) -> dict[str, Any]:
    job = get_current_job()
    connection, settings = job.connection, load_settings()
    record, views, waiting = _ended_children(connection, experiment_id, settings.stop_grace_seconds + STOP_MARGIN_S)
    if waiting:  # still going: again once they have ended
        experiments.enqueue_summary(connection, settings, experiment_id, waiting)
        return {"experiment_id": experiment_id, "waiting_for": waiting}
    if record["search"] == "tpe":
        asked = advance_study(connection, settings, record, views)
        if asked:
            return {"experiment_id": experiment_id, "asked": asked}
    folder = Path(settings.experiments_dir) / experiment_id
    folder.mkdir(parents=True, exist_ok=True)
    trials = {}
    if record["walk_forward"]:
        for trial in record["trials"]:
            stitched = stitch([views[sid].get("result") for sid in trial["sessions"]])
            if stitched is not None:
                name = f"trial_{trial['trial']}_equity.csv"
                curve = stitched.pop("curve")
                write_atomic(folder / name, lambda f, c=curve: f.write(c.to_csv(float_format="%.10g").encode()))
                trials[str(trial["trial"])] = {**stitched, "equity_file": name}
    summary = {"folder": str(folder), "trials": trials}
    # The files first: once the record holds its summary the experiment reads as ended.
    view = experiments.experiment_view({**record, "summary": summary}, views)
    for name, content in (("manifest.json", record["manifest"]), ("rows.json", view)):
        text = json.dumps(content, indent=1)
        write_atomic(folder / name, lambda f, t=text: f.write(t.encode()))
    # Atomically: a stop may be marking the record meanwhile.
    experiments.update_record(connection, experiment_id, lambda r: r.update(summary=summary))
    return {"experiment_id": experiment_id, "status": view["status"], "folder": str(folder)}


def _ended_children(connection: Redis, experiment_id: str, grace: float
                    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[str]]:
    """The record, the children's views and the ones not ended yet. A stopped experiment's children
    end within the stop grace (a hard kill after it, which releases no RQ dependency), so they are
    waited for here, up to `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        record = experiments.load_record(connection, experiment_id)
        views = experiments.children_views(connection, record)
        waiting = [sid for sid, view in views.items() if view["status"] not in FINISHED_STATUSES | {"expired"}]
        if not waiting or not record["stopped"] or time.monotonic() > deadline:
            return record, views, waiting
        time.sleep(STOP_POLL_S)


def advance_study(connection: Redis, settings: Settings, record: dict[str, Any],
                  views: dict[str, dict[str, Any]]) -> list[int]:
    """A tpe search's step, once its trials in flight have ended: the study told how each did, then the
    next batch asked and enqueued. The trials asked; none once all are, or the experiment is stopped."""
    experiment_id, request = record["experiment_id"], experiments.request_of(record)
    sweep, objective = request.sweep, request.objective
    study = experiment_study.open_study(connection, experiment_id, sweep, objective, len(record["trials"]))
    untold, rows = experiment_study.running(study), []
    for trial in record["trials"]:
        if trial["trial"] in untold:
            stitched = (stitch([views[sid].get("result") for sid in trial["sessions"]])
                        if objective.metric.startswith("oos.") else None)
            rows.append(experiments.trial_row(trial, views, objective, stitched))
    experiment_study.tell(study, rows)
    count = min(sweep.parallelism, record["planned"] - len(record["trials"]))
    if record["stopped"] or count <= 0:
        return []
    batch = experiment_study.ask(study, sweep, count, {trial["trial"] for trial in record["trials"]})
    experiments.enqueue_trials(connection, settings, experiment_id, batch)
    return [number for number, _ in batch]


def stitch(results: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The folds' test-window backtests (in fold order) as one curve and its metrics; None when a
    fold has no backtest (it failed, or its model is not a trade signal)."""
    backtests = [(r or {}).get("backtest") or {} for r in results]
    if not backtests or any(not b.get("metrics") for b in backtests):
        return None
    initial = backtests[0]["config"]["initial_capital"]
    level, parts, trades = initial, [], []
    for result, backtest in zip(results, backtests, strict=True):
        files = Path(result["model_path"]) / backtest["folder"]
        equity = pd.read_csv(files / "equity.csv", index_col=0, parse_dates=True)["equity"]
        scale = level / backtest["config"]["initial_capital"]
        parts.append(equity * scale)
        fold_trades = pd.read_csv(files / "trades.csv")
        fold_trades["net_pnl"] *= scale
        trades.append(fold_trades)
        level = float(parts[-1].iloc[-1])
    curve = pd.concat(parts)
    times = curve.index.tz_convert("UTC").tz_localize(None).to_numpy("datetime64[ns]")
    columns = pd.concat(trades)
    trade_columns = {key: columns[key].to_numpy() for key in ("net_pnl", "holding_hours", "holding_bars")}
    metrics = performance_metrics(curve.to_numpy(np.float64), times, trade_columns, initial, bars_per_year(times))
    return {"metrics": metrics, "bars": len(curve), "first_bar": curve.index[0].isoformat(),
            "last_bar": curve.index[-1].isoformat(), "curve": curve.rename("equity").to_frame()}
