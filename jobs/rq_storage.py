"""RQ's storage layout and record wording, where this project reads or writes them directly instead of
through RQ's public API: the job hash's fields, the started registry's entries, the intermediate
queue, the worker's registration keys, the worker's private stop mark, and the text of RQ's failure
records. Written against RQ 3; an RQ upgrade that changes any of them touches this file only.

Light (redis and rq only): the producer and the web process import it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from redis import Redis
from redis.client import Pipeline
from rq import Queue, Worker, worker_registration
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from trainhost.jobs.meta import SessionMeta

# -- the job hash (`rq:job:<id>`) ---------------------------------------------------------------------


def job_key(job_id: str) -> str:
    return Job.key_for(job_id)


def fetch_job(connection: Redis, job_id: str) -> Job | None:
    """The job from one HGETALL, loaded by RQ's own `restore` (Job.fetch adds an EXISTS; fetch_many a
    MULTI/EXEC: both cost a status request more); None when it does not exist or its record is
    incomplete (RQ cannot load a hash without its `data` field, e.g. one a failover to a stale
    replica left behind)."""
    job = Job(job_id, connection=connection, serializer=JSONSerializer)
    raw = connection.hgetall(job.key)
    if not raw:
        return None
    try:
        job.restore(raw)
    except NoSuchJobError:
        return None
    return job


def fetch_jobs(connection: Redis, job_ids: list[str]) -> list[Job | None]:
    """fetch_job() for many jobs in one round trip."""
    try:
        return Job.fetch_many(job_ids, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:  # one incomplete record fails the whole batch: read them one by one
        return [fetch_job(connection, job_id) for job_id in job_ids]


def have_payloads(connection: Redis, job_ids: list[str]) -> list[bool]:
    """Whether a loadable job holds each id, in one round trip: its hash has RQ's `data` field (the
    function and its arguments); a hash without it is a half record that no reader can load."""
    with connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hexists(job_key(job_id), "data")
        return [bool(found) for found in pipe.execute()]


def parse_meta(raw: bytes | str | None) -> SessionMeta:
    """The `meta` field as RQ stores it with the JSON serializer."""
    return json.loads(raw) if raw else {}


def _parse_time(raw: bytes | None) -> datetime | None:
    # RQ writes UTC as ...%fZ; fromisoformat reads that as RQ's own parser does (aware), without strptime.
    return datetime.fromisoformat(raw.decode()) if raw else None


@dataclass(frozen=True, slots=True)
class JobSummary:
    """The job-hash fields a queued or running session's status reads, from one HMGET: without the
    request payload (decompressed and parsed by RQ) and RQ's strptime date parsing, which made most
    of a status request's cost. Offers what the session view reads of a Job."""

    id: str
    status: JobStatus
    meta: SessionMeta
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    worker_name: str | None
    last_heartbeat: datetime | None

    FIELDS = ("status", "meta", "created_at", "started_at", "ended_at", "worker_name", "last_heartbeat")

    def get_status(self, refresh: bool = False) -> JobStatus:
        return self.status


def fetch_summary(connection: Redis, job_id: str) -> JobSummary | None:
    """The job's JobSummary; None when there is no such job (or no status in its record)."""
    status, meta, created, started, ended, worker, beat = connection.hmget(job_key(job_id), JobSummary.FIELDS)
    if status is None:
        return None
    return JobSummary(job_id, JobStatus(status.decode()), parse_meta(meta), _parse_time(created), _parse_time(started),
                      _parse_time(ended), worker.decode() if worker else None, _parse_time(beat))


def _field_of_each(connection: Redis, job_ids: Iterable[str], field: str) -> list[bytes | None]:
    with connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(job_key(job_id), field)
        return pipe.execute()


def statuses_of(connection: Redis, job_ids: list[str]) -> list[JobStatus | None]:
    """Each job's RQ status, in one round trip (None where its hash is gone)."""
    return [JobStatus(raw.decode()) if raw else None for raw in _field_of_each(connection, job_ids, "status")]


def metas_of(connection: Redis, job_ids: list[str]) -> list[SessionMeta]:
    """Each job's meta, in one round trip ({} where its hash is gone)."""
    return [parse_meta(raw) for raw in _field_of_each(connection, job_ids, "meta")]


# -- RQ's failure records (the last resort: what a job could not record itself) -----------------------

TIMEOUT, HORSE_KILLED, ABANDONED, RAISED = "timeout", "horse_killed", "abandoned", "raised"


def failure_cause(exc_string: str) -> tuple[str, str]:
    """What RQ's failure record of a job says happened, from its wording, as (cause, detail): TIMEOUT
    (the job's timeout, raised in the horse), HORSE_KILLED (the work horse died; detail: how, as
    waitpid said), ABANDONED (the registry cleanup found its worker gone), else RAISED (detail: the
    traceback's last line, '' without one)."""
    if "JobTimeoutException" in exc_string:
        return TIMEOUT, ""
    if "Work-horse terminated unexpectedly" in exc_string:  # "...; waitpid returned 9 (signal 9); "
        parts = exc_string.split("; ")
        return HORSE_KILLED, parts[1].strip() if len(parts) > 1 else ""
    if "AbandonedJobError" in exc_string:
        return ABANDONED, ""
    lines = [line for line in exc_string.strip().splitlines() if line.strip()]
    return RAISED, lines[-1] if lines else ""


# -- queues and the started registry -----------------------------------------------------------------


def take_off_queue(queue: Queue, job_id: str) -> bool:
    """Remove a waiting job from the queue's list, every copy of it (Queue.remove takes one); True
    when it was there, so no worker can have taken it."""
    return bool(queue.connection.lrem(queue.key, 0, job_id))


def take_off_intermediate_queue(pipe: Pipeline, queue: Queue, job_id: str) -> None:
    """A dequeued job waits in the queue's intermediate list until its horse starts it (RQ's
    prepare_job_execution removes it there); one the worker fails without starting it is removed
    here, or RQ's cleanup would later take it for an abandoned one."""
    pipe.lrem(queue.intermediate_queue_key, 1, job_id)


def started_entries(connection: Redis, queues: list[Queue], exclude: set[str]) -> dict[tuple[str, str], float]:
    """Every entry of the queues' started registries but `exclude`, as (queue name, member) -> score,
    in one round trip. A member is `<job id>:<execution id>`, its score the time it expires, which
    the running job's worker moves on at every heartbeat."""
    with connection.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.zrange(queue.started_job_registry.key, 0, -1, withscores=True)
        looks = pipe.execute()
    return {(queue.name, member.decode()): score for queue, rows in zip(queues, looks, strict=True)
            for member, score in rows if member.decode() not in exclude}


def job_id_of(member: str) -> str:
    return StartedJobRegistry.parse_job_id(member)


# KEYS: started registry, attempt counter. ARGV: registry member, the score watched, the counter's ttl.
# Only if the entry still holds the watched score: raise the session's fencing token, and give the
# entry score 0, an expiry long past, which RQ's registry cleanup takes for an abandoned job.
_EXPIRE_IF_UNCHANGED = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not score) or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
redis.call('INCR', KEYS[2])
if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
redis.call('ZADD', KEYS[1], 0, ARGV[1])
return 1
"""


def expire_if_unchanged(connection: Redis, registry_key: str, member: str, score: float, attempt_key: str,
                        attempt_ttl: int) -> bool:
    """Atomically: if the started-registry entry still holds `score`, fence out its attempt (raise
    the counter at `attempt_key`) and expire the entry. True when it did."""
    script = connection.register_script(_EXPIRE_IF_UNCHANGED)
    return bool(script(keys=[registry_key, attempt_key], args=[member, score, attempt_ttl]))


# -- the worker's registration and its stop mark ----------------------------------------------------


def worker_names(connection: Redis) -> list[str]:
    """The names of the workers registered in `rq:workers`, from the set alone (one round trip)."""
    prefix = Worker.redis_worker_namespace_prefix
    return [key.decode().removeprefix(prefix) for key in connection.smembers(Worker.redis_workers_keys)]


def is_registered(worker: Worker) -> bool:
    """Whether the worker is listed in `rq:workers` (what Worker.all() and /health read)."""
    return bool(worker.connection.sismember(worker.redis_workers_keys, worker.key))


def register_again(worker: Worker) -> None:
    """Write the worker's `rq:worker:<name>` hash and its listings as RQ's own start does (with the
    expiry RQ's heartbeat keeps moving), for a worker whose registration Redis lost."""
    with worker.connection.pipeline() as pipe:
        pipe.hset(worker.key, mapping=worker.serialize())
        pipe.hset(worker.key, "state", worker.get_state())
        pipe.expire(worker.key, worker.worker_ttl + 60)
        worker_registration.register(worker, pipe)
        pipe.execute()


def forget_stop_mark(worker: Worker, job_id: str) -> None:
    """Clear the mark a hard stop (request_stop_execution) leaves for RQ's failure handler, which
    clears it itself: for a failure that handler does not see (a superseded attempt's), so that a
    later failure of the same id on this worker is not taken for a stop."""
    if worker._stopped_job_id == job_id:
        worker._stopped_job_id = None
