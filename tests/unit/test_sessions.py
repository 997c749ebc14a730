"""A session's status read three ways (the light JobSummary for queued and running sessions, the full
job, the listing's two fields) by one rule, and its failure said in the job's own words, RQ's record
read only as the last resort. (Lost workers, which take the full read and RQ's cleanup, are tested
with real workers in tests/integration/test_faults.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
from rq import Queue
from rq.job import JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.utils import utcformat

from trainhost.jobs import producer, rq_storage
from trainhost.jobs.meta import queued
from trainhost.jobs.rq_storage import fetch_job, fetch_summary
from trainhost.jobs.sessions import failure_message, listed_statuses, session_status, session_view


@pytest.fixture
def queue():
    return Queue("training", connection=fakeredis.FakeRedis(), serializer=JSONSerializer)


def enqueue(queue: Queue, job_id: str):
    return queue.enqueue("trainhost.jobs.training.run_training", {"strategy_yaml": "x" * 2000}, job_id=job_id,
                         meta={"kind": "training", "strategy": "s", "progress": {"epoch": 0}})


def start(job, heartbeat_age_s: float = 0.0) -> None:
    now = datetime.now(UTC)
    job.connection.hset(job.key, mapping={
        "status": JobStatus.STARTED.value, "started_at": utcformat(now - timedelta(seconds=5)),
        "last_heartbeat": utcformat(now - timedelta(seconds=heartbeat_age_s)), "worker_name": "host:cpu-abc123"})
    job.meta.update(phase="training", progress={"epoch": 3, "total_epochs": 10})
    job.save_meta()


def test_queued_and_running_sessions_read_as_a_summary_give_the_full_view(queue):
    job = enqueue(queue, "s1")
    for _ in ("queued", "running"):
        summary = fetch_summary(queue.connection, "s1")
        assert summary is not None
        assert producer.get_session(queue.connection, "s1") == session_view(fetch_job(queue.connection, "s1"))
        assert session_view(summary) == session_view(fetch_job(queue.connection, "s1"))
        start(job)
    view = producer.get_session(queue.connection, "s1")
    assert (view["status"], view["phase"], view["progress"]["epoch"], view["worker"]) == (
        "running", "training", 3, "host:cpu-abc123")
    assert view["started_at"].endswith("+00:00")


def test_no_summary_for_a_missing_or_incomplete_record(queue):
    assert fetch_summary(queue.connection, "nope") is None
    queue.connection.hset(rq_storage.job_key("half"), "meta", "{}")  # what a stale replica's failover can leave
    assert fetch_summary(queue.connection, "half") is None
    with pytest.raises(producer.RequestError):
        producer.get_session(queue.connection, "half")


@pytest.mark.parametrize(("rq_status", "outcome", "expected"), [
    (JobStatus.QUEUED, None, "queued"), (JobStatus.SCHEDULED, None, "queued"), (JobStatus.STARTED, None, "running"),
    (JobStatus.FINISHED, "completed", "completed"), (JobStatus.FINISHED, "stopped", "stopped"),
    (JobStatus.FINISHED, None, "completed"), (JobStatus.FAILED, "failed", "failed"),
    (JobStatus.STOPPED, "stopped", "stopped"), (JobStatus.CANCELED, None, "cancelled"),
])
def test_the_listing_the_summary_and_the_job_give_one_status(queue, rq_status, outcome, expected):
    job = enqueue(queue, "s1")
    if outcome is not None:
        job.meta["outcome"] = outcome
        job.save_meta()
    job.set_status(rq_status)
    assert session_status(fetch_job(queue.connection, "s1")) == expected
    assert session_status(fetch_summary(queue.connection, "s1")) == expected
    assert listed_statuses(queue.connection, ["s1", "gone"]) == [expected, None]


def failed(queue, exc_string: str, meta: dict | None = None):
    job = enqueue(queue, "f1")
    job.meta.update(meta or {})
    job.save_meta()
    job.set_status(JobStatus.FAILED)
    Result.create_failure(job, ttl=600, exc_string=exc_string)
    return fetch_job(queue.connection, "f1")


def test_a_failure_is_said_in_the_jobs_own_words_not_in_its_traceback(queue):
    job = failed(queue, "Traceback ...\nrq.timeouts.JobTimeoutException: Task exceeded maximum timeout value",
                 {"outcome": "failed", "error": "data_dir/AAPL_1h.csv: row 7: high below low"})
    assert failure_message(job) == "data_dir/AAPL_1h.csv: row 7: high below low"
    assert session_view(job)["error"] == "data_dir/AAPL_1h.csv: row 7: high below low"


@pytest.mark.parametrize(("exc_string", "expected"), [
    ("Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); ",
     "the training process was killed (waitpid returned 9 (signal 9)): out of memory, or killed by an operator"),
    ("Moved to FailedJobRegistry, due to AbandonedJobError, at 2024-01-01",
     "the worker running this session was lost (no heartbeat for 15 s)"),
    ("Traceback (most recent call last):\n  ...\nValueError: boom\n", "ValueError: boom"),
    ("", "failed without an error message"),
])
def test_only_a_failure_nobody_recorded_is_read_from_rqs_record(queue, exc_string, expected):
    assert failure_message(failed(queue, exc_string)) == expected


def test_the_queued_meta_is_what_the_view_shows_of_a_new_session(queue):
    job = queue.enqueue("trainhost.jobs.training.run_training", {}, job_id="q1",
                        meta=queued("training", "s", ["AAPL"], ["1h"], total_epochs=5))
    view = session_view(fetch_summary(queue.connection, "q1"))
    assert (view["kind"], view["phase"], view["symbols"], view["timeframes"]) == (
        "training", "queued", ["AAPL"], ["1h"])
    assert view["progress"] == {"percent": 0.0, "epoch": 0, "total_epochs": 5, "message": "queued"}
    assert view["updated_at"] == job.meta["updated_at"] and view["metrics"] is None
