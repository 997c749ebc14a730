"""A session is one RQ job: its public status derived from the RQ status plus meta."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from trainhost.jobs import keys

# A running session whose heartbeat a live worker has seen unchanged this long, with Redis answering
# it (reads and writes) the whole time, has lost its worker: that worker requeues it. Only workers
# decide (worker/lost.py); a status read never does.
HEARTBEAT_TTL = 15
# What RQ's own started-registry entry is given instead: RQ's abandoned-job cleanup runs wherever the
# registry is counted (the health page, rq tools), and must not act on a session a worker has not
# judged lost; it is the fallback for when no trainhost worker is alive to judge.
LOST_BACKSTOP_SECONDS = 600
STATUSES = ("queued", "running", "completed", "failed", "stopped", "cancelled")
FINISHED_STATUSES = frozenset({"completed", "failed", "stopped", "cancelled"})

_RQ_TO_SESSION = {
    JobStatus.QUEUED: "queued",
    JobStatus.DEFERRED: "queued",
    JobStatus.SCHEDULED: "queued",
    JobStatus.STARTED: "running",
    JobStatus.FINISHED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.STOPPED: "stopped",
    JobStatus.CANCELED: "cancelled",
}


def fetch_job(connection: Redis, session_id: str) -> Job | None:
    """The session's job from one HGETALL (fetch_many wraps it in MULTI/EXEC: a third more time per status
    request); None when it does not exist or its record is incomplete (RQ cannot load a hash
    without its `data` field, e.g. one a failover to a stale replica left behind)."""
    job = Job(session_id, connection=connection, serializer=JSONSerializer)
    raw = connection.hgetall(job.key)
    if not raw:
        return None
    try:
        job.restore(raw)
    except NoSuchJobError:
        return None
    return job


def fetch_jobs(connection: Redis, session_ids: list[str]) -> list[Job | None]:
    """fetch_job() for many sessions in one round trip."""
    try:
        return Job.fetch_many(session_ids, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:  # one incomplete record fails the whole batch: read them one by one
        return [fetch_job(connection, session_id) for session_id in session_ids]


@dataclass(frozen=True, slots=True)
class JobSummary:
    """The job-hash fields a queued or running session's status reads, from one HMGET: without the
    request payload (decompressed and parsed by RQ) and RQ's strptime date parsing, which made most
    of a status request's cost. Offers what session_view() reads of a Job."""

    id: str
    status: JobStatus
    meta: dict[str, Any]
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    worker_name: str | None
    last_heartbeat: datetime | None

    FIELDS = ("status", "meta", "created_at", "started_at", "ended_at", "worker_name", "last_heartbeat")

    def get_status(self, refresh: bool = False) -> JobStatus:
        return self.status


def fetch_summary(connection: Redis, session_id: str) -> JobSummary | None:
    """The session's JobSummary; None when there is no such job (or no status in its record)."""
    status, meta, created, started, ended, worker, beat = connection.hmget(Job.key_for(session_id), JobSummary.FIELDS)
    if status is None:
        return None
    # RQ writes UTC as ...%fZ; fromisoformat reads that as RQ's own parser does, aware, in a microsecond.
    created, started, ended, beat = (datetime.fromisoformat(v.decode()) if v else None
                                     for v in (created, started, ended, beat))
    return JobSummary(session_id, JobStatus(status.decode()), json.loads(meta) if meta else {}, created, started,
                      ended, worker.decode() if worker else None, beat)


def session_status(job: Job | JobSummary) -> str:
    status = _RQ_TO_SESSION.get(job.get_status(refresh=False), "queued")
    if status == "completed" and job.meta.get("outcome") == "stopped":
        return "stopped"  # a cooperative stop ends cleanly but is still a stop
    return status


def listed_status(raw_status: bytes | str, raw_meta: bytes | str | None) -> str:
    """session_status() from the two job-hash fields it depends on (`status`, `meta`), for listings
    that must not read every job in full."""
    status = raw_status.decode() if isinstance(raw_status, bytes) else raw_status
    session = _RQ_TO_SESSION.get(JobStatus(status), "queued")
    if session == "completed" and raw_meta and json.loads(raw_meta).get("outcome") == "stopped":
        return "stopped"
    return session


def failure_message(job: Job) -> str | None:
    """What went wrong, in words: the job's own message, else one derived from RQ's record."""
    if job.meta.get("error"):
        return job.meta["error"]
    result = job.latest_result()
    text = (result.exc_string or "") if result is not None else ""
    if "JobTimeoutException" in text:
        return f"timed out after {job.timeout / 60:g} minutes (session_timeout_minutes)"
    if "Work-horse terminated unexpectedly" in text:
        return ("the training process was killed (" + text.split("; ")[1].strip() + "): "
                "out of memory, or killed by an operator")
    if "AbandonedJobError" in text:
        return f"the worker running this session was lost (no heartbeat for {HEARTBEAT_TTL} s)"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed without an error message"


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def session_view(job: Job | JobSummary, *, with_result: bool = True) -> dict[str, Any]:
    """The public record of a session (what GET /training/status/<id> returns)."""
    meta = job.meta
    status = session_status(job)
    view: dict[str, Any] = {
        "session_id": job.id,
        "kind": meta.get("kind"),
        "status": status,
        "phase": meta.get("phase"),
        "strategy": meta.get("strategy"),
        "symbols": meta.get("symbols"),
        "timeframes": meta.get("timeframes"),
        "progress": meta.get("progress"),
        "metrics": meta.get("metrics"),
        "throughput": meta.get("throughput"),
        "device": meta.get("device"),
        "resources": meta.get("resources"),
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "ended_at": _iso(job.ended_at),
        "updated_at": meta.get("updated_at"),
        "worker": job.worker_name,
        "error": failure_message(job) if status == "failed" else None,
    }
    if with_result and status in ("completed", "stopped"):
        view["result"] = job.return_value()
    return view


def history(connection: Redis, session_id: str) -> list[dict[str, Any]]:
    return [json.loads(item) for item in connection.lrange(keys.history_key(session_id), 0, -1)]
