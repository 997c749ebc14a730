"""A session's status read two ways: the light JobSummary (queued, running) and the full job.
(Lost workers, which take the full read and RQ's cleanup, are tested with real workers in
tests/integration/test_faults.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer
from rq.utils import utcformat

from trainhost.jobs import producer
from trainhost.jobs.sessions import fetch_job, fetch_summary, session_view


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
    queue.connection.hset("rq:job:half", "meta", "{}")  # what a stale replica's failover can leave
    assert fetch_summary(queue.connection, "half") is None
    with pytest.raises(producer.RequestError):
        producer.get_session(queue.connection, "half")
