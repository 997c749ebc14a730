"""Experiments: one request that fans out into ordinary training sessions (a sweep's trials, a
walk-forward's folds, or both) and comes back as one comparison. Light, as the producer is.

Each child is a session like any other (status, stop, history, artifacts, backtest), its meta
naming its experiment, trial and fold. The experiment's record lives in Redis under our prefix; its
summary (the stitched walk-forward curves, the files in `experiments_dir/<id>/`) is written by one
more job, which RQ runs once every child has ended, failed ones included
(trainhost.jobs.experiment_summary). Reading an experiment recomputes its rows from its children, so
it is current while they run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
import uuid
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Dependency
from rq.serializers import JSONSerializer

from trainhost.config import Settings
from trainhost.jobs import keys, producer
from trainhost.jobs.allowlist import JOB_FUNCTIONS
from trainhost.jobs.pipeline.data_paths import data_file_path
from trainhost.jobs.pipeline.errors import DataError, StrategyError
from trainhost.jobs.pipeline.experiment_space import Fold, Objective, folds, with_params
from trainhost.jobs.pipeline.strategy import Strategy, parse_strategy
from trainhost.jobs.producer import RequestError
from trainhost.jobs.rq_storage import fetch_jobs
from trainhost.jobs.schemas import ExperimentRequest, TrainingRequest
from trainhost.jobs.sessions import FINISHED_STATUSES, session_view

MAX_ID_CHARS = 48  # a child's id adds "-t<trial>-f<fold>" and must stay within 64
MIN_TRAIN_SAMPLES = 100  # labelled bars a fold's train window keeps after its indicators' warm-up
VERSIONED = ("trainhost", "torch", "numpy", "pandas", "numba", "rq", "redis")


def submit_experiment(connection: Redis, settings: Settings, request: ExperimentRequest | dict) -> dict[str, Any]:
    """Validate every child (each trial a valid strategy, each fold inside the data), then enqueue
    them and the summary job that waits for them; a refused experiment enqueues nothing."""
    request = producer.validate_request(ExperimentRequest, request)
    experiment_id = request.experiment_id or uuid.uuid4().hex
    if len(experiment_id) > MAX_ID_CHARS:
        raise RequestError(422, "invalid_request", f"experiment_id: at most {MAX_ID_CHARS} characters")
    if connection.exists(keys.experiment_key(experiment_id)):
        raise RequestError(409, "conflict", f"experiment_id: an experiment {experiment_id!r} already exists")
    base = request.base
    document = _document(base)
    trials = request.sweep.trials() if request.sweep else [{}]
    strategies = [_variant(document, base, params, index) for index, params in enumerate(trials)]
    fold_list = _folds(settings, strategies[0], request) if request.walk_forward else [None]
    count = len(trials) * len(fold_list)
    if count > settings.max_experiment_sessions:
        raise RequestError(422, "invalid_request", f"the experiment fans out into {len(trials)} trials x "
                           f"{len(fold_list)} folds = {count} sessions, above max_experiment_sessions "
                           f"({settings.max_experiment_sessions})")
    children = []
    for index, (params, strategy) in enumerate(zip(trials, strategies, strict=True)):
        children.append({"trial": index, "params": params, "sessions": [
            _enqueue_child(connection, settings, experiment_id, index, document, params, base, strategy, fold)
            for fold in fold_list]})
    record = {
        "experiment_id": experiment_id, "name": request.name or strategies[0].name, "created_at": _now(),
        "search": request.sweep.search if request.sweep else None, "objective": request.objective.model_dump(),
        "walk_forward": request.walk_forward is not None, "trials": children, "stopped": False, "summary": None,
        "manifest": _manifest(settings, request, document, strategies[0], fold_list),
    }
    connection.set(keys.experiment_key(experiment_id), json.dumps(record))
    connection.zadd(keys.experiments_key(), {experiment_id: time.time()})
    enqueue_summary(connection, settings, experiment_id, [sid for trial in children for sid in trial["sessions"]])
    return {"experiment_id": experiment_id, "status": "queued", "trials": len(trials), "folds": len(fold_list)
            if request.walk_forward else 0, "sessions": count, "message": f"experiment of {count} sessions queued"}


def enqueue_summary(connection: Redis, settings: Settings, experiment_id: str, waiting_for: list[str]) -> None:
    """The summary job, run by RQ once every session in `waiting_for` has ended, whatever its outcome."""
    Queue(settings.training_queue, connection=connection, serializer=JSONSerializer).enqueue(
        JOB_FUNCTIONS["experiment"], kwargs={"experiment_id": experiment_id},
        depends_on=Dependency(jobs=waiting_for, allow_failure=True) if waiting_for else None,
        job_timeout=settings.job_timeout_seconds, result_ttl=settings.result_ttl_seconds,
        failure_ttl=settings.result_ttl_seconds, description=f"summary of experiment {experiment_id}",
        meta={"kind": "experiment"})


def _document(base: TrainingRequest) -> dict[str, Any]:
    source = base.strategy_yaml if base.strategy_yaml is not None else base.strategy
    try:
        return dict(parse_strategy(source).raw)
    except StrategyError as exc:
        raise RequestError(422, "invalid_strategy", f"base: {exc}", exc.errors) from None


def _variant(document: dict[str, Any], base: TrainingRequest, params: dict[str, Any], index: int) -> Strategy:
    """Trial `index`'s strategy, refused naming the trial, the path and the field."""
    for path in params:
        parent = document
        for key in path.split(".")[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            raise RequestError(422, "invalid_request", f"sweep.params.{path}: the strategy has no "
                               f"{path.rsplit('.', 1)[0]!r} section to set it in")
    shown = ", ".join(f"{path}={value!r}" for path, value in params.items())
    try:
        return parse_strategy(with_params(document, params), base.overrides())
    except StrategyError as exc:
        raise RequestError(422, "invalid_strategy", f"trial {index} ({shown}): {exc}", exc.errors) from None


def _folds(settings: Settings, strategy: Strategy, request: ExperimentRequest) -> list[Fold]:
    """The walk-forward's folds over the first symbol's base-timeframe bars of the date range."""
    times = bar_times(settings, strategy)
    found = folds(times, request.walk_forward)
    spec = request.walk_forward
    if not found:
        raise RequestError(422, "invalid_request", f"walk_forward: the date range holds {len(times)} bars of "
                           f"{strategy.symbols[0]} {strategy.base_timeframe}, too few for one fold of train "
                           f"{spec.train} and test {spec.test}")
    short = min(found, key=lambda fold: fold.train_bars)
    if short.train_bars - strategy.warmup_bars < MIN_TRAIN_SAMPLES:
        raise RequestError(422, "invalid_request", f"walk_forward.train: fold {short.index} trains on "
                           f"{short.train_bars} bars, {strategy.warmup_bars} of them indicator warm-up; at least "
                           f"{MIN_TRAIN_SAMPLES} must remain")
    return found


def bar_times(settings: Settings, strategy: Strategy) -> list[datetime]:
    """The bar times of the strategy's first symbol and base timeframe inside its date range (the
    data file's first column, read without pandas)."""
    try:
        path = data_file_path(settings.data_dir, strategy.symbols[0], strategy.base_timeframe, must_exist=True)
    except DataError as exc:
        raise RequestError(422, "data_unavailable", f"walk_forward: {exc}") from None
    times = []
    with open(path, newline="") as handle:
        rows = csv.reader(handle)
        next(rows, None)
        for row in rows:
            moment = datetime.fromisoformat(row[0])
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
            after_start = strategy.start is None or moment >= strategy.start
            if after_start and (strategy.end is None or moment <= strategy.end):
                times.append(moment)
    return times


def _enqueue_child(connection: Redis, settings: Settings, experiment_id: str, trial: int, document: dict,
                   params: dict, base: TrainingRequest, strategy: Strategy, fold: Fold | None) -> str:
    fields = base.model_dump(exclude_none=True, exclude={"strategy_yaml", "strategy"})
    fields["strategy"] = with_params(document, params)
    session_id = f"{experiment_id}-t{trial}"
    if fold is not None:
        session_id += f"-f{fold.index}"
        fields.update(start_date=fold.train_start.isoformat(), test_start_date=fold.test_start.isoformat(),
                      end_date=fold.test_end.isoformat())
        strategy = parse_strategy(fields["strategy"], TrainingRequest.model_validate(fields).overrides())
    link = {"experiment_id": experiment_id, "trial": trial, "fold": fold.index if fold else None}
    return producer.enqueue_training(connection, settings, TrainingRequest.model_validate(fields), strategy,
                                     session_id, link)


def _manifest(settings: Settings, request: ExperimentRequest, document: dict, strategy: Strategy,
              fold_list: list[Fold | None]) -> dict[str, Any]:
    """What re-runs the experiment to the same rows: the request, the base strategy, the folds' exact
    bar ranges, the data files' hashes and the versions of what computes them."""
    files = {}
    for symbol in strategy.symbols:
        for timeframe in strategy.timeframes:
            path = data_file_path(settings.data_dir, symbol, timeframe)
            if path.is_file():
                files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"request": request.model_dump(mode="json", exclude_none=True), "base_strategy": document,
            "folds": [fold.as_dict() for fold in fold_list if fold is not None], "data_sha256": files,
            "versions": {name: _version(name) for name in VERSIONED}}


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat()


def load_record(connection: Redis, experiment_id: str) -> dict[str, Any]:
    raw = connection.get(keys.experiment_key(experiment_id))
    if raw is None:
        raise RequestError(404, "not_found", f"experiment {experiment_id!r} not found")
    return json.loads(raw)


def save_record(connection: Redis, record: dict[str, Any]) -> None:
    connection.set(keys.experiment_key(record["experiment_id"]), json.dumps(record))


def children_views(connection: Redis, record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every child's session view, result included, by session id (a missing one: expired)."""
    ids = [sid for trial in record["trials"] for sid in trial["sessions"]]
    views = {}
    for session_id, job in zip(ids, fetch_jobs(connection, ids), strict=True):
        views[session_id] = session_view(job) if job is not None else {"session_id": session_id, "status": "expired"}
    return views


def get_experiment(connection: Redis, experiment_id: str) -> dict[str, Any]:
    """Status, children done/total, ETA, the rows (params, validation metrics, backtest, status) and
    the best trial by the objective."""
    record = load_record(connection, experiment_id)
    views = children_views(connection, record)
    objective = Objective(**record["objective"])
    summary = record.get("summary") or {}
    rows = [_row(trial, views, objective, summary.get("trials", {}).get(str(trial["trial"])))
            for trial in record["trials"]]
    counts: dict[str, int] = {}
    for view in views.values():
        counts[view["status"]] = counts.get(view["status"], 0) + 1
    done = sum(count for status, count in counts.items() if status in FINISHED_STATUSES or status == "expired")
    scored = [row for row in rows if row["status"] == "completed" and row["objective"] is not None]
    best = None
    for row in scored:
        if best is None or objective.better(row["objective"], best["objective"]):
            best = row
    return {
        "experiment_id": experiment_id, "name": record["name"], "created_at": record["created_at"],
        "status": _status(record, counts, done, len(views)), "search": record["search"],
        "objective": record["objective"], "walk_forward": record["walk_forward"],
        "children": {"total": len(views), "done": done, "by_status": counts},
        "eta_seconds": _eta(views.values(), len(views) - done),
        "best": None if best is None else {"trial": best["trial"], "params": best["params"],
                                            "objective": best["objective"], "test_backtest": best["test_backtest"]},
        "rows": [{key: value for key, value in row.items() if key != "test_backtest"} for row in rows],
        "folds": record["manifest"]["folds"], "summary_folder": summary.get("folder"),
    }


def _status(record: dict[str, Any], counts: dict[str, int], done: int, total: int) -> str:
    if done < total:
        return "stopping" if record["stopped"] else "running" if set(counts) - {"queued"} else "queued"
    if record.get("summary") is None:
        return "summarizing"
    return "stopped" if record["stopped"] else "completed"


def _row(trial: dict[str, Any], views: dict[str, dict], objective: Objective, summary: dict | None) -> dict:
    """One trial's row: its status (completed only when every fold is), the validation metrics (a
    walk-forward's: the mean over its folds), the objective, and for a walk-forward the stitched
    out-of-sample metrics of the summary."""
    children = [views[sid] for sid in trial["sessions"]]
    statuses = {child["status"] for child in children}
    status = next((s for s in ("failed", "running", "queued", "stopped", "cancelled", "expired") if s in statuses),
                  "completed")
    validation = _mean_validation([c["result"]["training_metrics"] for c in children if c.get("result")])
    oos = (summary or {}).get("metrics")
    if objective.metric.startswith("oos."):
        value = (oos or {}).get(objective.metric[4:])
    else:
        value = validation.get(objective.metric)
    single = children[0].get("result") if len(children) == 1 else None
    return {"trial": trial["trial"], "params": trial["params"], "status": status, "sessions": trial["sessions"],
            "errors": [c["error"] for c in children if c.get("error")], "validation": validation,
            "objective": value, "oos": oos, "test_backtest": (single or {}).get("backtest", {}).get("metrics")
            if single else oos}


def _mean_validation(metrics: list[dict[str, Any]]) -> dict[str, float]:
    pairs = {"val_accuracy": "best_val_accuracy", "val_loss": "best_val_loss"}
    result = {}
    for name, key in pairs.items():
        values = [m[key] for m in metrics if m.get(key) is not None]
        if values:
            result[name] = sum(values) / len(values)
    return result


def _eta(views, remaining: int) -> float | None:
    """Remaining children × the mean duration of the ended ones, over the ones running at once."""
    durations = [(datetime.fromisoformat(v["ended_at"]) - datetime.fromisoformat(v["started_at"])).total_seconds()
                 for v in views if v.get("ended_at") and v.get("started_at")]
    running = sum(1 for v in views if v["status"] == "running")
    if not remaining or not durations:
        return 0.0 if not remaining else None
    return remaining * (sum(durations) / len(durations)) / max(1, running)


def list_experiments(connection: Redis, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    ids = [i.decode() for i in connection.zrevrange(keys.experiments_key(), offset, offset + limit - 1)]
    listed = []
    for experiment_id in ids:
        try:
            view = get_experiment(connection, experiment_id)
        except RequestError:
            connection.zrem(keys.experiments_key(), experiment_id)
            continue
        listed.append({key: view[key] for key in ("experiment_id", "name", "created_at", "status", "search",
                                                  "objective", "children", "eta_seconds", "best")})
    return {"experiments": listed, "total": connection.zcard(keys.experiments_key()), "limit": limit,
            "offset": offset}


def stop_experiment(connection: Redis, settings: Settings, experiment_id: str) -> dict[str, Any]:
    """Cancel the queued children, stop the running ones; the summary then runs once they have ended."""
    record = load_record(connection, experiment_id)
    record["stopped"] = True
    save_record(connection, record)
    views = children_views(connection, record)
    asked = 0
    for session_id, view in views.items():
        if view["status"] in ("queued", "running"):
            try:
                producer.request_stop(connection, settings, session_id)
                asked += 1
            except RequestError:  # it ended meanwhile
                pass
    # Cancelled children never release RQ's dependency: the summary is asked for again, waiting for
    # the running ones only.
    running = [sid for sid, view in children_views(connection, record).items() if view["status"] == "running"]
    enqueue_summary(connection, settings, experiment_id, running)
    return {"experiment_id": experiment_id, "status": "stopping", "sessions_stopped": asked}
