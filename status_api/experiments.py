"""The experiments API: one request of many sessions (a sweep, a walk-forward, or both), read back
as one comparison."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from flask import Blueprint, jsonify

from trainhost.jobs import experiments
from trainhost.jobs.backtest_results import MAX_EQUITY_POINTS, equity_points
from trainhost.jobs.pipeline.errors import PipelineError
from trainhost.jobs.pipeline.model_paths import open_model_file
from trainhost.jobs.producer import RequestError
from trainhost.jobs.schemas import LIST_LIMIT_MAX, LIST_OFFSET_MAX
from trainhost.status_api import services
from trainhost.status_api.training import checked_id, int_arg, json_body, require_token

bp = Blueprint("experiments", __name__, url_prefix="/experiments")


@bp.post("")
@require_token
def submit():
    return jsonify(experiments.submit_experiment(services.redis(), services.settings(), json_body())), 202


@bp.get("")
def listing():
    limit = int_arg("limit", 50, 1, LIST_LIMIT_MAX)
    offset = int_arg("offset", 0, 0, LIST_OFFSET_MAX)
    return jsonify(experiments.list_experiments(services.redis(), limit, offset))


@bp.get("/<experiment_id>")
def detail(experiment_id: str):
    return jsonify(experiments.get_experiment(services.redis(), checked_id(experiment_id)))


@bp.post("/<experiment_id>/stop")
@require_token
def stop(experiment_id: str):
    return jsonify(experiments.stop_experiment(services.redis(), services.settings(), checked_id(experiment_id)))


@bp.delete("/<experiment_id>")
@require_token
def delete(experiment_id: str):
    return jsonify(experiments.delete_experiment(services.redis(), checked_id(experiment_id)))


@bp.get("/<experiment_id>/equity")
def equity(experiment_id: str):
    """A walk-forward trial's stitched out-of-sample curve, downsampled to `points`."""
    trial = int_arg("trial", 0, 0, 1_000_000)
    points = int_arg("points", 1000, 2, MAX_EQUITY_POINTS)
    record = experiments.load_record(services.redis(), checked_id(experiment_id))
    summary = ((record.get("summary") or {}).get("trials") or {}).get(str(trial))
    if summary is None:
        raise RequestError(404, "no_curve", f"experiment {experiment_id!r} has no stitched curve for trial {trial} "
                           "(not a walk-forward, not summarised yet, or a fold without a backtest)")
    try:
        with open_model_file(Path(record["summary"]["folder"]), summary["equity_file"]) as handle:
            rows = list(csv.DictReader(io.StringIO(handle.read().decode("utf-8"))))
    except PipelineError as exc:
        raise RequestError(404, "no_curve", f"experiment {experiment_id!r}: its curve file is gone ({exc})") from None
    curve = [{"time": row["time"], "equity": float(row["equity"])} for row in rows]
    return jsonify({"experiment_id": experiment_id, "trial": trial, **equity_points(curve, points)})
