"""A session is one RQ job: its public status derived from the RQ status plus meta, and its
failures said in words."""

from __future__ import annotations

import json
from typing import Any

from redis import Redis
from rq.job import Job, JobStatus

from trainhost.jobs import keys, rq_storage
from trainhost.jobs.meta import SessionMeta, view_fields
from trainhost.jobs.rq_storage import JobSummary

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
# The RQ statuses whose session status also depends on the meta (status_of()).
_READS_META = frozenset({JobStatus.FINISHED, JobStatus.DEFERRED})


def status_of(rq_status: JobStatus, meta: SessionMeta) -> str:
    """The session's status: RQ's, except that a cooperative stop ends as a normal return (FINISHED)
    and is still a stop, and that a session trained in a pack runs while its own job waits behind the
    pack's (DEFERRED): from when the pack takes it up (its phase leaves `queued`) until its job, run
    once the pack ends, returns what the pack committed for it (jobs/training_pack.py)."""
    if rq_status == JobStatus.FINISHED and meta.get("outcome") == "stopped":
        return "stopped"
    if rq_status == JobStatus.DEFERRED and meta.get("pack") and meta.get("phase", "queued") != "queued":
        return "running"
    return _RQ_TO_SESSION.get(rq_status, "queued")


def session_status(job: Job | JobSummary) -> str:
    return status_of(job.get_status(refresh=False), job.meta)


def listed_statuses(connection: Redis, session_ids: list[str]) -> list[str | None]:
    """session_status() of each session without reading its job: its RQ status, and its meta only
    where status_of() reads it, in two round trips; None where the record is gone."""
    rq_statuses = rq_storage.statuses_of(connection, session_ids)
    needing_meta = [session_id for session_id, status in zip(session_ids, rq_statuses, strict=True)
                    if status in _READS_META]
    metas = dict(zip(needing_meta, rq_storage.metas_of(connection, needing_meta), strict=True))
    return [None if status is None else status_of(status, metas.get(session_id, {}))
            for session_id, status in zip(session_ids, rq_statuses, strict=True)]


# -- failures in words ---------------------------------------------------------------------------------


def timed_out(timeout_seconds: float | None) -> str:
    return f"timed out after {(timeout_seconds or 0) / 60:g} minutes (session_timeout_minutes)"


def horse_killed(how: str) -> str:
    return f"the training process was killed ({how}): out of memory, or killed by an operator"


def worker_lost(grace_seconds: float) -> str:
    return f"the worker running this session was lost (no heartbeat for {grace_seconds:g} s)"


def failure_message(job: Job) -> str:
    """What went wrong, in words: as the job (or its worker) recorded it in meta; else, the last
    resort for a failure nobody could record (a non-trainhost job, Redis away at the time), derived
    from RQ's record."""
    if job.meta.get("error"):
        return job.meta["error"]
    result = job.latest_result()
    cause, detail = rq_storage.failure_cause((result.exc_string or "") if result is not None else "")
    if cause == rq_storage.TIMEOUT:
        return timed_out(job.timeout)
    if cause == rq_storage.HORSE_KILLED:
        return horse_killed(detail)
    if cause == rq_storage.ABANDONED:
        return worker_lost(HEARTBEAT_TTL)
    return detail or "failed without an error message"


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def session_view(job: Job | JobSummary, *, with_result: bool = True) -> dict[str, Any]:
    """The public record of a session (what GET /training/status/<id> returns)."""
    status = session_status(job)
    view: dict[str, Any] = {
        "session_id": job.id,
        "status": status,
        **view_fields(job.meta),
        "created_at": _iso(job.created_at),
        # A pack's member runs from when its pack took it up (its own job runs after the pack).
        "started_at": _iso(job.started_at) or (job.meta.get("pack") or {}).get("started_at"),
        "ended_at": _iso(job.ended_at),
        "worker": job.worker_name,
        "error": failure_message(job) if status == "failed" else None,
    }
    if with_result and status in ("completed", "stopped"):
        view["result"] = job.return_value()
    return view


def history(connection: Redis, session_id: str) -> list[dict[str, Any]]:
    return [json.loads(item) for item in connection.lrange(keys.history_key(session_id), 0, -1)]
