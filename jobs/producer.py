"""The producer API: what the KTRDR backend imports, and what the HTTP API and the CLI call.

Light on purpose: no torch, numpy or pandas are imported here (a backend container has none).
Everything is validated before anything is enqueued; a refused request enqueues nothing.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError
from redis import Redis
from redis.exceptions import WatchError
from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Dependency, Job, JobStatus
from rq.serializers import JSONSerializer

from trainhost.config import Settings
from trainhost.jobs import control, keys, rq_storage
from trainhost.jobs.allowlist import JOB_FUNCTIONS
from trainhost.jobs.attempts import fence_earlier, record_ttl, remove_checkpoint
from trainhost.jobs.meta import ExperimentLink, SessionMeta
from trainhost.jobs.meta import queued as queued_meta
from trainhost.jobs.pipeline.data_paths import check_data_available, check_evaluation_data
from trainhost.jobs.pipeline.errors import DataError, PipelineError, StrategyError
from trainhost.jobs.pipeline.model_paths import read_model_summary
from trainhost.jobs.pipeline.packing import CPU_PACK_SIZE, GPU_PACK_SIZE, pack_signature, plan_packs
from trainhost.jobs.pipeline.strategy import Strategy, parse_strategy
from trainhost.jobs.rq_storage import fetch_job, fetch_jobs, fetch_summary
from trainhost.jobs.schemas import EvaluationRequest, Priority, StopRequest, TrainingRequest
from trainhost.jobs.sessions import FINISHED_STATUSES, STATUSES, listed_statuses, session_status, session_view
from trainhost.worker.devices import device_of_worker

# A claim only has to outlive its own enqueue: from then on the job record holds the id.
CLAIM_SECONDS = 300
DELETE_LOCK_SECONDS = 30


class RequestError(Exception):
    """A refused request: HTTP status, a stable code, a message naming the field. The one error class of
    the producer API and of the HTTP API alike (the web app answers it as JSON: status_api/errors.py)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def validate_request(model: type[BaseModel], payload: Any) -> Any:
    if isinstance(payload, model):
        return payload
    if not isinstance(payload, dict):
        raise RequestError(400, "invalid_request", "the request body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()]
        raise RequestError(422, "invalid_request", "; ".join(problems), problems) from None


def _queue(connection: Redis, name: str) -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer)


def _claim_id(connection: Redis, settings: Settings, requested: str | None) -> tuple[str, str]:
    """Claim one session id (a new one when none is requested); returns it and its submission nonce."""
    session_id = requested or uuid.uuid4().hex
    return session_id, _claim_ids(connection, settings, [session_id])[0]


def _claim_ids(connection: Redis, settings: Settings, session_ids: list[str]) -> list[str]:
    """Claim the session ids for this submission, each atomically (SET NX): of any number of
    concurrent submissions with one id exactly one gets it, the others a 409 (and release what they
    got). Returns each id's submission nonce (what its checkpoints and commit are known by). A few
    pipelined round trips however many ids: an experiment claims its children at once."""
    submissions = [uuid.uuid4().hex for _ in session_ids]
    with connection.pipeline(transaction=False) as pipe:
        for session_id, submission in zip(session_ids, submissions, strict=True):
            pipe.set(keys.claim_key(session_id), submission, nx=True, ex=CLAIM_SECONDS)
        held = pipe.execute()
    loaded = rq_storage.have_payloads(connection, session_ids)
    taken = [sid for sid, got, full in zip(session_ids, held, loaded, strict=True) if not got or full]
    if taken:
        for session_id, submission, got in zip(session_ids, submissions, held, strict=True):
            if got:
                _release_claim(connection, session_id, submission)
        raise RequestError(409, "conflict", f"session_id: a session {taken[0]!r} already exists")
    ttl = record_ttl(settings.result_ttl_seconds, settings.job_timeout_seconds)
    with connection.pipeline() as pipe:
        for session_id in session_ids:
            # What an earlier session with this id may have left: a record without its data (a failover
            # to a stale replica), its stop request, history and commit. Any of its attempts still alive
            # somewhere (a paused worker) is fenced out by raising the counter.
            pipe.delete(rq_storage.job_key(session_id), keys.stop_key(session_id), keys.history_key(session_id),
                        keys.commit_key(session_id))
            fence_earlier(connection, session_id, ttl, pipeline=pipe)
        pipe.execute()
    return submissions


def _release_claim(connection: Redis, session_id: str, submission: str) -> None:
    """Drop the claim if it is still this submission's (it may have expired and been taken again)."""
    claim = keys.claim_key(session_id)
    with connection.pipeline() as pipe:
        try:
            pipe.watch(claim)
            if pipe.get(claim) == submission.encode():
                pipe.multi()
                pipe.delete(claim)
                pipe.execute()
        except WatchError:
            pass


def queue_name(settings: Settings, kind: str, priority: Priority) -> str:
    """The queue a session of `kind` goes to: the high-priority one, which workers serve first, or its kind's."""
    if priority == "high":
        return settings.high_priority_queue
    return settings.training_queue if kind == "training" else settings.evaluation_queue


class Enqueued(NamedTuple):
    """One claimed session ready to enqueue: its id, submission nonce, request payload and meta."""

    session_id: str
    submission: str
    payload: dict[str, Any]
    meta: SessionMeta


def _enqueue(connection: Redis, settings: Settings, kind: str, priority: Priority, sessions: list[Enqueued],
             retries: int = 0, packs: dict[str, list[str]] | None = None) -> None:
    """Enqueue claimed sessions of one kind, in one transaction; their claims are released if it fails.

    `packs` (pack id -> its members' session ids): each pack is one more job, which trains its members
    together (jobs/training_pack.py); a member's own job waits behind it (an RQ dependency that allows
    failure) and, run once the pack ended, returns what the pack committed for it, or trains it alone."""
    packs = packs or {}
    queue = _queue(connection, queue_name(settings, kind, priority))
    pack_of = {member: pack_id for pack_id, members in packs.items() for member in members}
    ttls = {"result_ttl": settings.result_ttl_seconds, "failure_ttl": settings.result_ttl_seconds}
    retry = Retry(max=retries) if retries else None
    datas, members = [], []
    for one in sessions:
        options = {"kwargs": {"request": one.payload, "submission": one.submission}, "job_id": one.session_id,
                   "timeout": settings.job_timeout_seconds, "meta": one.meta, "retry": retry,
                   "description": f"{one.meta['kind']} {one.meta.get('strategy')}", **ttls}
        if one.session_id in pack_of:
            # Registered behind its pack here, in the same transaction (RQ's enqueue checks each
            # dependency in a round trip of its own, and takes one on a job it cannot find yet as met).
            members.append(queue.create_job(JOB_FUNCTIONS[kind], **options, status=JobStatus.DEFERRED,
                                            depends_on=Dependency([pack_of[one.session_id]], allow_failure=True)))
        else:
            datas.append(Queue.prepare_data(JOB_FUNCTIONS[kind], **options))
    # A pack's work is its members' sessions' time, one after another at worst.
    datas += [Queue.prepare_data(JOB_FUNCTIONS["pack"], kwargs={"pack_id": pack_id, "members": ids}, job_id=pack_id,
                                 timeout=settings.job_timeout_seconds * len(ids), meta={"kind": "pack", "members": ids},
                                 description=f"pack of {len(ids)} trainings", **ttls) for pack_id, ids in packs.items()]
    try:
        with connection.pipeline() as pipe:
            for job in members:
                job.save(pipeline=pipe)
                job.register_dependency(pipeline=pipe)
            queue.enqueue_many(datas, pipeline=pipe)
            pipe.zadd(keys.sessions_key(), {one.session_id: time.time() for one in sessions})
            pipe.execute()
    except BaseException:
        for one in sessions:
            _release_claim(connection, one.session_id, one.submission)
        raise


def submit_training(connection: Redis, settings: Settings, request: TrainingRequest | dict,
                    *, check_data: bool = True) -> dict[str, Any]:
    """Validate a training request (strategy, overrides, data files) and enqueue it.

    `check_data=False` skips the data-file check for callers that cannot see the data root
    (the worker checks again)."""
    request = validate_request(TrainingRequest, request)
    source = request.strategy_yaml if request.strategy_yaml is not None else request.strategy
    try:
        strategy = parse_strategy(source, request.overrides())
    except StrategyError as exc:
        raise RequestError(422, "invalid_strategy", str(exc), exc.errors) from None
    if check_data:
        try:
            check_data_available(settings.data_dir, strategy)
        except DataError as exc:
            raise RequestError(422, "data_unavailable", str(exc)) from None
    session_id = enqueue_training(connection, settings, request, strategy, request.requested_id)
    return {"session_id": session_id, "operation_id": session_id, "status": "queued", "gpu_allocated": False,
            "message": f"training of {strategy.name!r} queued", "warnings": strategy.warnings}


def enqueue_training(connection: Redis, settings: Settings, request: TrainingRequest, strategy: Strategy,
                     session_id: str | None, experiment: ExperimentLink | None = None) -> str:
    """Enqueue a validated training request (its strategy parsed from it); returns the session id."""
    session_id = session_id or uuid.uuid4().hex
    enqueue_trainings(connection, settings, [TrainingChild(request, strategy, session_id, experiment)])
    return session_id


class TrainingChild(NamedTuple):
    """A validated training to enqueue: its request, the strategy parsed from it, its id, its experiment."""

    request: TrainingRequest
    strategy: Strategy
    session_id: str
    experiment: ExperimentLink | None = None


def enqueue_trainings(connection: Redis, settings: Settings, children: list[TrainingChild], *,
                      packed: bool = False) -> None:
    """Enqueue validated trainings of one priority at once (an experiment's children): claimed and
    enqueued in a few pipelined round trips, all or none. `packed`: same-shape children train in packs
    (`pack_size`), each a member of its pack with `pack` in its meta."""
    submissions = _claim_ids(connection, settings, [child.session_id for child in children])
    sessions = []
    for child, submission in zip(children, submissions, strict=True):
        strategy = child.strategy
        meta = queued_meta("training", strategy.name, strategy.symbols, strategy.timeframes,
                           total_epochs=strategy.training.epochs)
        if child.experiment is not None:
            meta["experiment"] = child.experiment
        sessions.append(Enqueued(child.session_id, submission, child.request.model_dump(exclude_none=True), meta))
    workers = rq_storage.worker_names(connection) if packed else []
    plan = plan_packs([pack_signature(child.strategy) for child in children], pack_size(settings, workers),
                      len(workers)) if packed else []
    packs = {}
    for members in plan:
        pack_id = f"pack-{uuid.uuid4().hex}"
        packs[pack_id] = [sessions[member].session_id for member in members]
        for index, member in enumerate(members):
            sessions[member].meta["pack"] = {"pack_id": pack_id, "index": index, "size": len(members)}
    _enqueue(connection, settings, "training", children[0].request.priority, sessions,
             retries=settings.training_retries, packs=packs)


def pack_size(settings: Settings, workers: list[str]) -> int:
    """The most trainings in one pack: the setting, or with `pack_size: 0` one chosen from the device the
    registered `workers` (their names) train on (any on a GPU: GPU_PACK_SIZE, else CPU_PACK_SIZE)."""
    if settings.pack_size:
        return settings.pack_size
    on_gpu = any(device_of_worker(name) == "cuda" for name in workers)
    return GPU_PACK_SIZE if on_gpu else CPU_PACK_SIZE


def submit_evaluation(connection: Redis, settings: Settings, request: EvaluationRequest | dict,
                      *, check_data: bool = True) -> dict[str, Any]:
    """Validate an evaluation request (model path inside models_dir, data file) and enqueue it."""
    request = validate_request(EvaluationRequest, request)
    try:
        summary = read_model_summary(settings.models_dir, request.model_path)
        if check_data:
            check_evaluation_data(settings.data_dir, Strategy.from_dict(summary["spec"]), request.symbol,
                                  request.timeframe)
    except PipelineError as exc:
        raise RequestError(422, "invalid_request", str(exc)) from None
    session_id, submission = _claim_id(connection, settings, request.requested_id)
    meta = queued_meta("evaluation", summary["strategy"], [request.symbol or summary["symbol"]],
                       [request.timeframe or summary["timeframe"]])
    _enqueue(connection, settings, "evaluation", request.priority,
             [Enqueued(session_id, submission, request.model_dump(exclude_none=True), meta)])
    return {"session_id": session_id, "operation_id": session_id, "status": "queued",
            "message": f"evaluation of {request.model_path!r} queued"}


def _existing(connection: Redis, session_id: str) -> Job:
    job = fetch_job(connection, session_id)
    if job is None:
        raise RequestError(404, "not_found", f"no session {session_id!r}")
    return job


def request_stop(connection: Redis, settings: Settings, request: StopRequest | dict | str) -> dict[str, Any]:
    """Queued: cancelled at once. Running: the stop key is set; the job stops after its current
    batch, and the worker kills the work horse if it has not ended `stop_grace_seconds` later.

    A stop is accepted once: the first request wins (SET NX of the stop key), and its deadline
    stands. Any later stop of the session, concurrent or repeated, answers 409: "already being
    stopped" (with that deadline) or "already ended"."""
    if isinstance(request, str):
        request = {"session_id": request}
    session_id = validate_request(StopRequest, request).session_id
    job = _existing(connection, session_id)
    status = session_status(job)
    if status in FINISHED_STATUSES:
        raise _ended(session_id, status)
    requested_at = time.time()
    deadline = requested_at + settings.stop_grace_seconds
    record = control.stop_record(requested_at, deadline)
    stop_key = keys.stop_key(session_id)
    if not connection.set(stop_key, record, nx=True, ex=int(settings.stop_grace_seconds) + 3600):
        raise _already_stopping(connection, session_id)
    if not connection.exists(rq_storage.job_key(session_id)):  # deleted since it was read
        connection.delete(stop_key)
        raise RequestError(404, "not_found", f"no session {session_id!r}")
    if status == "queued" and (job.get_status(refresh=False) == JobStatus.DEFERRED
                               or rq_storage.take_off_queue(_queue(connection, job.origin), session_id)):
        # Taken off the queue here (or waiting on no queue: a pack's member its pack has not taken
        # up), so no worker can start it; had a worker taken it first, it finds the stop key at its
        # first progress write and stops as a running session does.
        try:
            job.cancel()
        except (InvalidJobOperation, NoSuchJobError):
            pass  # deleted meanwhile: nothing left to cancel
        remove_checkpoint(settings.models_dir, session_id)  # one a suspended attempt left
        return {"session_id": session_id, "status": "cancelled", "message": "queued session cancelled"}
    return {"session_id": session_id, "status": "stopping", "hard_stop_at": _iso(deadline),
            "message": f"stop requested; hard stop after {settings.stop_grace_seconds:g} s if still running"}


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _ended(session_id: str, status: str) -> RequestError:
    return RequestError(409, "conflict", f"session {session_id!r} already ended ({status})", {"status": status})


def _already_stopping(connection: Redis, session_id: str) -> RequestError:
    """The answer to a stop that came after the one that won."""
    job = fetch_job(connection, session_id)
    if job is None:
        return RequestError(404, "not_found", f"no session {session_id!r}")
    status = session_status(job)
    if status in FINISHED_STATUSES:
        return _ended(session_id, status)
    raw = connection.get(keys.stop_key(session_id))
    deadline = _iso(control.hard_stop_at(raw)) if raw else None
    return RequestError(409, "conflict", f"session {session_id!r} is already being stopped (hard stop at {deadline})",
                        {"status": "stopping", "hard_stop_at": deadline})


def get_session(connection: Redis, session_id: str) -> dict[str, Any]:
    """The session's view. What pollers ask about, a queued or running session, is read as a
    JobSummary; an ended one from its full job record. A read never changes a session: whether a
    running session's worker is lost is for the workers to decide (worker/lost.py)."""
    summary = fetch_summary(connection, session_id)
    if summary is not None and session_status(summary) in ("queued", "running"):
        return session_view(summary)
    return session_view(_existing(connection, session_id))


def get_result(connection: Redis, session_id: str) -> dict[str, Any]:
    job = _existing(connection, session_id)
    status = session_status(job)
    if status not in ("completed", "stopped"):
        raise RequestError(409, "not_ready", f"session {session_id!r} has no result yet ({status})")
    return {"session_id": session_id, "status": status, **(job.return_value() or {})}


def list_sessions(connection: Redis, status: str | None = None, limit: int = 50,
                  offset: int = 0) -> dict[str, Any]:
    """Newest first, optionally filtered by status; sessions whose records expired are pruned.
    Without a filter only the requested page is read from Redis; with one, every session costs one
    small reply (its RQ status, plus its meta when it finished: completed or stopped) and only the
    page is read in full."""
    if status is not None and status not in STATUSES:
        raise RequestError(422, "invalid_request", f"status: must be one of {', '.join(STATUSES)}, got {status!r}")
    if not 1 <= limit <= 1000 or offset < 0:
        raise RequestError(422, "invalid_request", "limit must be 1..1000 and offset >= 0")
    if status is None:
        ids = [i.decode() for i in connection.zrevrange(keys.sessions_key(), offset, offset + limit - 1)]
        views = _views(connection, ids)
        return {"total": connection.zcard(keys.sessions_key()), "sessions": views, "limit": limit, "offset": offset}
    ids = [i.decode() for i in connection.zrevrange(keys.sessions_key(), 0, -1)]
    statuses = listed_statuses(connection, ids)
    expired = [session_id for session_id, listed in zip(ids, statuses, strict=True) if listed is None]
    if expired:
        connection.zrem(keys.sessions_key(), *expired)
    matching = [session_id for session_id, listed in zip(ids, statuses, strict=True) if listed == status]
    views = _views(connection, matching[offset:offset + limit])
    return {"total": len(matching), "sessions": views, "limit": limit, "offset": offset}


def _views(connection: Redis, ids: list[str]) -> list[dict[str, Any]]:
    jobs = fetch_jobs(connection, ids)
    expired = [session_id for session_id, job in zip(ids, jobs, strict=True) if job is None]
    if expired:
        connection.zrem(keys.sessions_key(), *expired)
    return [session_view(job, with_result=False) for job in jobs if job is not None]


def delete_session(connection: Redis, session_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Remove a finished session's Redis records (its model files stay on disk; with `settings`, a
    checkpoint it left is removed too). Of concurrent DELETEs one removes it, the others answer 404."""
    job = _existing(connection, session_id)
    status = session_status(job)
    if status not in FINISHED_STATUSES:
        raise RequestError(409, "conflict", f"session {session_id!r} is {status}; stop it before deleting")
    lock = keys.delete_lock_key(session_id)
    if not connection.set(lock, "1", nx=True, ex=DELETE_LOCK_SECONDS):
        raise RequestError(404, "not_found", f"no session {session_id!r} (it is being deleted)")
    try:
        job = _existing(connection, session_id)  # again, now that no other DELETE runs
        status = session_status(job)
        if status not in FINISHED_STATUSES:
            raise RequestError(409, "conflict", f"session {session_id!r} is {status}; stop it before deleting")
        job.delete()
        connection.delete(keys.history_key(session_id), keys.stop_key(session_id), keys.claim_key(session_id),
                          keys.commit_key(session_id))
        connection.zrem(keys.sessions_key(), session_id)
    finally:
        connection.delete(lock)
    if settings is not None:
        remove_checkpoint(settings.models_dir, session_id)
    return {"session_id": session_id, "deleted": True}
