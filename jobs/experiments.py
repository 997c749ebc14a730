"""Experiments: one request that fans out into ordinary training sessions (a sweep's trials, a
walk-forward's folds, or both) and comes back as one comparison. Light, as the producer is.

Each child is a session like any other (status, stop, history, artifacts, backtest), its meta
naming its experiment, trial and fold. The experiment's record lives in Redis under our prefix; its
summary (the stitched walk-forward curves, the files in `experiments_dir/<id>/`) is written by one
more job, which RQ runs once every child has ended, failed ones included
(trainhost.jobs.experiment_summary). Reading an experiment recomputes its rows from its children, so
it is current while they run.

A tpe search is driven by that same job: each run tells the Optuna study how the trials that ended
did, asks the next batch, enqueues it and itself again behind it, until `max_trials` are asked; then
it summarises (trainhost.jobs.experiment_study holds the study).
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from redis import Redis
from rq import Queue, Retry
from rq.job import Dependency
from rq.serializers import JSONSerializer

from trainhost.config import Settings
from trainhost.jobs import keys, producer
from trainhost.jobs.allowlist import JOB_FUNCTIONS
from trainhost.jobs.pipeline.data_paths import check_data_available, data_file_path
from trainhost.jobs.pipeline.errors import DataError, StrategyError
from trainhost.jobs.pipeline.experiment_space import Fold, Objective, Sweep, folds, with_params
from trainhost.jobs.pipeline.strategy import Strategy, parse_strategy
from trainhost.jobs.producer import RequestError
from trainhost.jobs.rq_storage import fetch_jobs
from trainhost.jobs.schemas import ExperimentRequest, TrainingRequest
from trainhost.jobs.sessions import FINISHED_STATUSES, session_status, session_view

MAX_ID_CHARS = 48  # a child's id adds "-t<trial>-f<fold>" and must stay within 64
MIN_TRAIN_SAMPLES = 100  # labelled bars a fold's train window keeps after its indicators' warm-up
SUMMARY_RETRIES = 2  # the summary (or a tpe step) is safe to run again: a lost worker does not strand it
VERSIONED = ("trainhost", "torch", "numpy", "pandas", "numba", "rq", "redis")


def submit_experiment(connection: Redis, settings: Settings, request: ExperimentRequest | dict) -> dict[str, Any]:
    """Validate every child (each trial a valid strategy, each fold inside the data), then enqueue
    them and the summary job that waits for them; a refused experiment enqueues nothing. A tpe
    search enqueues only its driver: that job (a worker's: Optuna is no producer's import) creates the
    study and asks the first batch; its space is checked here, each parameter's extremes alone."""
    request = producer.validate_request(ExperimentRequest, request)
    experiment_id = request.experiment_id or uuid.uuid4().hex
    if len(experiment_id) > MAX_ID_CHARS:
        raise RequestError(422, "invalid_request", f"experiment_id: at most {MAX_ID_CHARS} characters")
    if connection.exists(keys.experiment_key(experiment_id)):
        raise RequestError(409, "conflict", f"experiment_id: an experiment {experiment_id!r} already exists")
    base, sweep = request.base, request.sweep
    document = _document(base)
    adaptive = sweep is not None and sweep.search == "tpe"
    if adaptive:
        if sweep.pruning and request.walk_forward:
            raise RequestError(422, "invalid_request", "sweep.pruning: a pruner judges one training's epochs, "
                               "and a walk-forward trial is several trainings")
        for params in sweep.extremes():
            _variant(document, base, params, "a trial")
    trials = [] if adaptive else sweep.trials() if sweep else [{}]
    strategies = [_variant(document, base, params, f"trial {index}") for index, params in enumerate(trials)]
    if sweep is not None:
        _check_effective(document, base, sweep)
    first = strategies[0] if strategies else _variant(document, base, {}, "the base")
    try:
        check_data_available(settings.data_dir, first)
    except DataError as exc:
        raise RequestError(422, "data_unavailable", f"base: {exc}") from None
    fold_list = _folds(settings, first, request) if request.walk_forward else [None]
    planned = sweep.max_trials if adaptive else len(trials)
    count = planned * len(fold_list)
    if count > settings.max_experiment_sessions:
        raise RequestError(422, "invalid_request", f"the experiment fans out into {planned} trials x "
                           f"{len(fold_list)} folds = {count} sessions, above max_experiment_sessions "
                           f"({settings.max_experiment_sessions})")
    children, pending = [], []
    for index, (params, strategy) in enumerate(zip(trials, strategies, strict=True)):
        built = [_child(experiment_id, index, document, params, base, strategy, fold) for fold in fold_list]
        pending.extend(built)
        children.append({"trial": index, "params": params, "sessions": [child.session_id for child in built]})
    if pending:
        producer.enqueue_trainings(connection, settings, pending, packed=True)
    record = {
        "experiment_id": experiment_id, "name": request.name or first.name, "created_at": _now(),
        "search": sweep.search if sweep else None, "objective": request.objective.model_dump(),
        "walk_forward": request.walk_forward is not None, "trials": children, "planned": planned,
        "stopped": False, "summary": None, "manifest": _manifest(settings, request, document, first, fold_list),
    }
    connection.set(keys.experiment_key(experiment_id), json.dumps(record))
    connection.zadd(keys.experiments_key(), {experiment_id: time.time()})
    enqueue_summary(connection, settings, experiment_id, [sid for trial in children for sid in trial["sessions"]])
    return {"experiment_id": experiment_id, "status": "queued", "children": [sid for trial in children
                                                                             for sid in trial["sessions"]],
            "trials": planned, "folds": len(fold_list)
            if request.walk_forward else 0, "sessions": count, "message": f"experiment of {count} sessions queued"
            if not adaptive else f"tpe experiment of up to {count} sessions queued"}


def enqueue_trials(connection: Redis, settings: Settings, experiment_id: str,
                   asked: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """The driver's next batch (trial number, params) enqueued as children and added to the record,
    then the driver itself again, once they have ended; returns their session ids. A trial whose
    strategy is invalid is a failed row without sessions. A stop that came meanwhile stops them."""
    record = load_record(connection, experiment_id)
    manifest = record["manifest"]
    base = request_of(record).base
    fold_list = [Fold.from_dict(fold) for fold in manifest["folds"]] or [None]
    entries = []
    for number, params in asked:
        entry: dict[str, Any] = {"trial": number, "params": params, "sessions": []}
        try:
            strategy = _variant(manifest["base_strategy"], base, params, f"trial {number}")
        except RequestError as exc:
            entry["error"] = exc.message
        else:
            entry["sessions"] = [_enqueue_once(connection, settings, experiment_id, number, manifest["base_strategy"],
                                               params, base, strategy, fold) for fold in fold_list]
        entries.append(entry)

    def add(record: dict[str, Any]) -> None:
        recorded = {trial["trial"] for trial in record["trials"]}  # by an earlier run of this batch
        record["trials"].extend(entry for entry in entries if entry["trial"] not in recorded)

    added = update_record(connection, experiment_id, add)
    sessions = [sid for entry in entries for sid in entry["sessions"]]
    if added["stopped"]:  # stop_experiment read the children before these were added
        sessions = _stop_children(connection, settings, sessions)[1]
    enqueue_summary(connection, settings, experiment_id, sessions)
    return sessions


def _enqueue_once(connection: Redis, settings: Settings, experiment_id: str, trial: int, document: dict,
                  params: dict, base: TrainingRequest, strategy: Strategy, fold: Fold | None) -> str:
    """_enqueue_child(), or the child an earlier run of this batch enqueued before it was lost."""
    try:
        return _enqueue_child(connection, settings, experiment_id, trial, document, params, base, strategy, fold)
    except RequestError as exc:
        if exc.status != 409:
            raise
        return child_id(experiment_id, trial, fold)


def child_id(experiment_id: str, trial: int, fold: Fold | None) -> str:
    return f"{experiment_id}-t{trial}" + ("" if fold is None else f"-f{fold.index}")


def enqueue_summary(connection: Redis, settings: Settings, experiment_id: str, waiting_for: list[str]) -> None:
    """The summary job, run by RQ once every session in `waiting_for` has ended, whatever its outcome."""
    Queue(settings.training_queue, connection=connection, serializer=JSONSerializer).enqueue(
        JOB_FUNCTIONS["experiment"], kwargs={"experiment_id": experiment_id},
        depends_on=Dependency(jobs=waiting_for, allow_failure=True) if waiting_for else None,
        job_timeout=settings.job_timeout_seconds, result_ttl=settings.result_ttl_seconds,
        failure_ttl=settings.result_ttl_seconds, description=f"summary of experiment {experiment_id}",
        meta={"kind": "experiment"}, retry=Retry(max=SUMMARY_RETRIES))


def _document(base: TrainingRequest) -> dict[str, Any]:
    source = base.strategy_yaml if base.strategy_yaml is not None else base.strategy
    try:
        return dict(parse_strategy(source).raw)
    except StrategyError as exc:
        raise RequestError(422, "invalid_strategy", f"base: {exc}", exc.errors) from None


def _variant(document: dict[str, Any], base: TrainingRequest, params: dict[str, Any], trial: str) -> Strategy:
    """A trial's strategy, refused naming the trial, the path and the field."""
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
        raise RequestError(422, "invalid_strategy", f"{trial} ({shown}): {exc}" if shown else f"{trial}: {exc}",
                           exc.errors) from None


def _check_effective(document: dict[str, Any], base: TrainingRequest, sweep: Sweep) -> None:
    """Refuse a swept path the strategy does not use: a path that parses but is read by nothing
    (e.g. KTRDR's `model.training.learning_rate`; ours is `training.learning_rate`) would run the
    same training under different names."""
    by_path: dict[str, dict[str, dict[str, Any]]] = {}
    for params in sweep.extremes():
        path, value = next(iter(params.items()))
        values = by_path.setdefault(path, {})
        if len(values) < 2:  # two different values tell whether the path is read
            values.setdefault(json.dumps(value, sort_keys=True), params)
    for path, variants in by_path.items():
        seen = {json.dumps(_variant(document, base, params, "a trial").model_dump(
            mode="json", exclude={"raw", "warnings"}), sort_keys=True) for params in variants.values()}
        if len(variants) > 1 and len(seen) == 1:
            raise RequestError(422, "invalid_request", f"sweep.params.{path}: its values all give the same "
                               "strategy: nothing reads this path (training settings live under training.*, "
                               "e.g. training.learning_rate)")


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
    child = _child(experiment_id, trial, document, params, base, strategy, fold)
    producer.enqueue_trainings(connection, settings, [child])
    return child.session_id


def _child(experiment_id: str, trial: int, document: dict, params: dict, base: TrainingRequest, strategy: Strategy,
           fold: Fold | None) -> producer.TrainingChild:
    """Trial `trial`'s training (of `fold`, with its dates and test start), as the producer enqueues it."""
    fields = base.model_dump(exclude_none=True, exclude={"strategy_yaml", "strategy"})
    fields["strategy"] = with_params(document, params)
    if fold is not None:
        fields.update(start_date=fold.train_start.isoformat(), train_end_date=fold.train_end.isoformat(),
                      test_start_date=fold.test_start.isoformat(), end_date=fold.test_end.isoformat())
        strategy = parse_strategy(fields["strategy"], TrainingRequest.model_validate(fields).overrides())
    link = {"experiment_id": experiment_id, "trial": trial, "fold": fold.index if fold else None}
    return producer.TrainingChild(TrainingRequest.model_validate(fields), strategy,
                                  child_id(experiment_id, trial, fold), link)


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


def update_record(connection: Redis, experiment_id: str, change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """`change` applied to the record atomically (WATCH: run again on a concurrent write, so a stop
    and a driver adding trials never lose each other's); returns the record as saved."""
    key = keys.experiment_key(experiment_id)

    def apply(pipe) -> dict[str, Any]:
        raw = pipe.get(key)
        if raw is None:
            raise RequestError(404, "not_found", f"experiment {experiment_id!r} not found")
        record = json.loads(raw)
        change(record)
        pipe.multi()
        pipe.set(key, json.dumps(record))
        return record

    return connection.transaction(apply, key, value_from_callable=True)


def request_of(record: dict[str, Any]) -> ExperimentRequest:
    """The experiment's request, as its manifest holds it."""
    return ExperimentRequest.model_validate(record["manifest"]["request"])


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
    return experiment_view(record, children_views(connection, record))


def experiment_view(record: dict[str, Any], views: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The experiment as GET /experiments/<id> shows it, from its record and its children's views."""
    experiment_id = record["experiment_id"]
    objective = Objective(**record["objective"])
    summary = record.get("summary") or {}
    rows = [trial_row(trial, views, objective, summary.get("trials", {}).get(str(trial["trial"])))
            for trial in record["trials"]]
    counts: dict[str, int] = {}
    for view in views.values():
        counts[view["status"]] = counts.get(view["status"], 0) + 1
    done = sum(count for status, count in counts.items() if status in FINISHED_STATUSES or status == "expired")
    # A tpe search's trials not asked yet (none once it is stopped) count as children to come.
    unasked = 0 if record["stopped"] else record.get("planned", len(record["trials"])) - len(record["trials"])
    total = len(views) + max(0, unasked) * max(1, len(record["manifest"]["folds"]))
    scored = [row for row in rows if row["status"] == "completed" and row["objective"] is not None]
    best = None
    for row in scored:
        if best is None or objective.better(row["objective"], best["objective"]):
            best = row
    eta = _eta(views.values(), total - done)
    folds = record["manifest"]["folds"]
    return {
        "experiment_id": experiment_id, "name": record["name"], "created_at": record["created_at"],
        "status": _status(record, counts, done, total), "search": record["search"],
        "kind": _kind(record), "objective": record["objective"],
        "walk_forward": {"folds": folds, "metrics": best["oos"] if best else None} if record["walk_forward"] else None,
        "children": {"total": total, "done": done, "by_status": counts},
        "progress": {"done": done, "total": total, "eta_seconds": eta}, "eta_seconds": eta,
        "best": None if best is None else {"trial": best["trial"], "params": best["params"],
                                            "objective": best["objective"], "test_backtest": best["test_backtest"]},
        "rows": [{key: value for key, value in row.items() if key != "test_backtest"} for row in rows],
        "folds": folds, "summary_folder": summary.get("folder"),
    }


def _kind(record: dict[str, Any]) -> str:
    """What the experiment varies: `sweep`, `walk_forward`, or `sweep_walk_forward` (both)."""
    if record["walk_forward"]:
        return "sweep_walk_forward" if record["search"] else "walk_forward"
    return "sweep"


def _status(record: dict[str, Any], counts: dict[str, int], done: int, total: int) -> str:
    if done < total:
        return "stopping" if record["stopped"] else "running" if set(counts) - {"queued"} else "queued"
    if record.get("summary") is None:
        return "summarizing"
    return "stopped" if record["stopped"] else "completed"


def trial_row(trial: dict[str, Any], views: dict[str, dict], objective: Objective, summary: dict | None) -> dict:
    """One trial's row: its status (completed only when every fold is; pruned when its pruner stopped
    it; failed without sessions: its strategy was invalid), the validation metrics (a walk-forward's:
    the mean over its folds), the objective, and for a walk-forward the stitched out-of-sample metrics
    of the summary."""
    children = [views[sid] for sid in trial["sessions"]]
    statuses = {"pruned" if child["status"] == "stopped" and (child.get("experiment") or {}).get("pruned")
                else child["status"] for child in children}
    status = next((s for s in ("failed", "running", "queued", "stopped", "cancelled", "expired", "pruned")
                   if s in statuses), "completed" if children else "failed")
    validation = _mean_validation([c["result"]["training_metrics"] for c in children if c.get("result")])
    oos = (summary or {}).get("metrics")
    if objective.metric.startswith("oos."):
        value = (oos or {}).get(objective.metric[4:])
    else:
        value = validation.get(objective.metric)
    single = children[0].get("result") if len(children) == 1 else None
    errors = [c["error"] for c in children if c.get("error")] + ([trial["error"]] if "error" in trial else [])
    return {"trial": trial["trial"], "fold": None, "session_id": (trial["sessions"] or [None])[0],
            "params": trial["params"], "status": status, "sessions": trial["sessions"],
            "errors": errors, "validation": validation, "metrics": validation, "objective": value, "oos": oos,
            "backtest": oos,
            "test_backtest": (single or {}).get("backtest", {}).get("metrics") if single else oos}


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
    """Cancel the queued children, stop the running ones; the summary then runs once they have ended.
    A tpe driver asks no more trials (and stops those it enqueued while this ran: enqueue_trials)."""
    record = update_record(connection, experiment_id, lambda r: r.update(stopped=True))
    asked, _ = _stop_children(connection, settings, [sid for t in record["trials"] for sid in t["sessions"]])
    # Neither a cancelled child nor one killed after the stop grace releases RQ's dependency: the
    # summary is asked for again without one, and waits out the grace itself (summarize_experiment).
    enqueue_summary(connection, settings, experiment_id, [])
    return {"experiment_id": experiment_id, "status": "stopping", "sessions_stopped": asked}


def delete_experiment(connection: Redis, experiment_id: str) -> dict[str, Any]:
    """Remove an ended experiment's records (its children stay sessions of their own, its folder stays);
    409 while it is still going."""
    view = get_experiment(connection, experiment_id)
    if view["status"] not in ("completed", "stopped"):
        raise RequestError(409, "conflict", f"experiment {experiment_id!r} is {view['status']}: stop it, or wait "
                           "for it to end, before deleting it")
    connection.delete(keys.experiment_key(experiment_id))
    connection.zrem(keys.experiments_key(), experiment_id)
    return {"experiment_id": experiment_id, "deleted": True}


def _stop_children(connection: Redis, settings: Settings, session_ids: list[str]) -> tuple[int, list[str]]:
    """Stop each child still queued or running: how many were asked to, and the ones still running."""
    asked = 0
    for session_id, job in zip(session_ids, fetch_jobs(connection, session_ids), strict=True):
        if job is not None and session_status(job) in ("queued", "running"):
            try:
                producer.request_stop(connection, settings, session_id)
                asked += 1
            except RequestError:  # it ended meanwhile
                pass
    still = fetch_jobs(connection, session_ids)
    return asked, [sid for sid, job in zip(session_ids, still, strict=True) if job and session_status(job) == "running"]
