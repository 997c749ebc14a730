"""How a session ended is recorded in its meta (`outcome`, and `error` in words) by the job, or by its
worker when the job could not say (a killed work horse, a hard stop), and the worker decides from
that, never from a traceback's wording. Real redis-server (the writes are Lua scripts)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import now

from tests.helpers.processes import wait_for
from trainhost.jobs import attempts, control, keys
from trainhost.jobs.job_context import run_reported
from trainhost.jobs.pipeline.errors import DataError, TrainingSuspended
from trainhost.jobs.rq_storage import fetch_job
from trainhost.jobs.sessions import horse_killed, session_view, timed_out, worker_lost
from trainhost.worker.rq_worker import TrainhostWorker

pytestmark = pytest.mark.integration


@pytest.fixture
def queue(redis_conn) -> Queue:
    return Queue("training", connection=redis_conn, serializer=JSONSerializer)


def enqueue(queue: Queue, session_id: str = "s1", **kwargs):
    return queue.enqueue("trainhost.jobs.training.run_training", {}, job_id=session_id,
                         meta={"kind": "training", "phase": "queued"}, **kwargs)


def raising(exc: BaseException):
    def work(reporter):
        raise exc
    return work


@pytest.mark.parametrize(("ending", "outcome", "error"), [
    ({"model_path": "m"}, "completed", None),
    ({"model_path": "m", "stopped": True}, "stopped", None),
    (TrainingSuspended("suspended after 3 of 12 epochs"), "suspended", None),
    (DataError("AAPL_1h.csv: row 7: high below low"), "failed", "AAPL_1h.csv: row 7: high below low"),
    (JobTimeoutException("Task exceeded maximum timeout value (6 seconds)"), "failed",
     "timed out after 0.1 minutes (session_timeout_minutes)"),
    (RuntimeError("boom"), "failed", "internal error (RuntimeError: boom); see the worker log"),
])
def test_the_job_records_how_it_ended_before_it_returns_or_raises(queue, ending, outcome, error):
    job = enqueue(queue, job_timeout=6)
    if isinstance(ending, Exception):
        with pytest.raises(type(ending)):  # re-raised as it came: RQ records the failure
            run_reported(job, raising(ending))
    else:
        assert run_reported(job, lambda reporter: ending) == ending
    stored = fetch_job(queue.connection, job.id).meta
    assert (stored.get("outcome"), stored.get("error")) == (outcome, error)
    assert job.meta["outcome"] == outcome  # the job object the worker reads it from, in the horse


def test_a_new_attempt_clears_how_the_last_one_ended(queue):
    job = enqueue(queue)
    with pytest.raises(DataError):
        run_reported(job, raising(DataError("the data file is gone")))
    assert fetch_job(queue.connection, job.id).meta["error"] == "the data file is gone"
    run_reported(job, lambda reporter: {"model_path": "m"})
    stored = fetch_job(queue.connection, job.id).meta
    assert stored["outcome"] == "completed" and "error" not in stored


def worker_for(queue: Queue) -> TrainhostWorker:
    return TrainhostWorker([queue], connection=queue.connection, allowed=frozenset())


@pytest.mark.parametrize(("outcome", "exc_string", "requeued"), [
    ("suspended", "no traceback words at all", True),
    ("failed", "trainhost.jobs.pipeline.errors.TrainingSuspended: a message quoting it", False),
])
def test_the_worker_requeues_a_suspended_session_by_its_meta_not_by_its_traceback(queue, outcome, exc_string,
                                                                                   requeued):
    job = enqueue(queue)
    queue.remove(job.id)
    job.meta["outcome"] = outcome
    worker_for(queue).handle_job_failure(job, queue, exc_string=exc_string)
    assert job.get_status(refresh=True) == (JobStatus.QUEUED if requeued else JobStatus.FAILED)
    assert (job.id in queue.job_ids) == requeued


def started(queue: Queue, seconds_ago: float = 1.0):
    job = enqueue(queue, job_timeout=60)
    queue.remove(job.id)
    job.set_status(JobStatus.STARTED)
    job.meta.update(phase="training", progress={"epoch": 3})
    job.save_meta()
    job.started_at = now() - timedelta(seconds=seconds_ago)
    return job


@pytest.mark.parametrize(("seconds_ago", "error"), [
    (1.0, horse_killed("signal 9")),  # waitpid's status of a SIGKILL: the OOM killer, an operator
    (120.0, timed_out(60)),  # the worker's own kill of a horse far past its timeout
])
def test_a_killed_work_horse_is_said_in_words_in_its_meta(queue, seconds_ago, error):
    job = started(queue, seconds_ago)
    worker = worker_for(queue)
    worker.handle_work_horse_killed(job, 4242, 9, None)
    worker.handle_job_failure(job, queue, exc_string="Work-horse terminated unexpectedly; waitpid returned 9; ")
    view = session_view(fetch_job(queue.connection, job.id))
    assert (view["status"], view["error"], view["progress"]) == ("failed", error, {"epoch": 3})
    assert fetch_job(queue.connection, job.id).meta["outcome"] == "failed"


def test_a_superseded_attempt_records_nothing_about_its_killed_horse(queue):
    job = started(queue)
    attempts.begin(queue.connection, job.id, 3600)
    try:
        attempts.fence_earlier(queue.connection, job.id, 3600)  # another worker took the session over
        worker_for(queue).handle_work_horse_killed(job, 4242, 9, None)
    finally:
        attempts.forget(job.id)
    assert "outcome" not in fetch_job(queue.connection, job.id).meta


def test_a_session_whose_worker_was_lost_fails_in_words_when_no_retries_are_left(queue):
    job = started(queue)
    member, score = f"{job.id}:lost-execution", 12345.0  # as the lost worker's last heartbeat left it
    queue.connection.zadd(queue.started_job_registry.key, {member: score})
    worker = TrainhostWorker([queue], connection=queue.connection, allowed=frozenset(), lost_grace=7)
    worker.give_up_lost(queue, member, score)
    view = session_view(fetch_job(queue.connection, job.id))
    # The judging worker's words (its grace), not RQ's AbandonedJobError record read back.
    assert (view["status"], view["error"]) == ("failed", worker_lost(7))


def test_a_session_past_its_hard_stop_is_killed_and_reads_stopped(redis_conn, start_worker, queue):
    """A job that never looks at its stop key (no progress writes) is killed by its worker at the
    deadline; RQ marks it STOPPED and the worker says so in its meta. The worker goes on."""
    start_worker("--queues", "training")
    job = queue.enqueue("tests.helpers.jobs.sleepy_job", 120, job_id="deaf")
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.STARTED, 30, "the job to start")
    redis_conn.set(keys.stop_key(job.id), control.stop_record(time.time(), time.time()))
    wait_for(lambda: job.get_status(refresh=True) == JobStatus.STOPPED, 20, "the hard stop")
    stored = fetch_job(redis_conn, job.id)
    assert session_view(stored)["status"] == "stopped" and stored.meta["outcome"] == "stopped"
    after = queue.enqueue("tests.helpers.jobs.tiny_job", 1)
    wait_for(lambda: after.get_status(refresh=True) == JobStatus.FINISHED, 30, "the next job")
