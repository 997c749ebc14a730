"""Priority end to end: real redis-server, a real `trainhost worker` process, the producer API, and
queue names that are not the defaults (the producer and the worker both take them from the settings)."""

from __future__ import annotations

import pytest
from rq import Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.helpers.fixtures import strategy_text
from tests.helpers.processes import wait_for
from trainhost.config import load_settings
from trainhost.jobs import producer

pytestmark = pytest.mark.integration
DATES = {"start_date": "2017-05-01", "end_date": "2018-02-07"}
RENAMED = {"training_queue": "gpu-train", "evaluation_queue": "evals", "high_priority_queue": "urgent"}


def test_a_high_priority_training_sent_behind_ten_runs_next(redis_server, redis_conn, start_worker,
                                                              sample_data_dir, tmp_path):
    shared = {"data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models"), "stop_grace_seconds": "5",
              **RENAMED}
    settings = load_settings({"redis_url": redis_server.url, **shared})
    worker = start_worker(**shared)
    listening = next(w for w in Worker.all(connection=redis_conn, serializer=JSONSerializer)
                     if w.name == worker.worker_name)
    assert listening.queue_names() == ["urgent", "gpu-train", "evals"]

    def submit(**body) -> str:
        request = {"strategy_yaml": strategy_text("v3_multi_indicator"), **DATES, **body}
        return producer.submit_training(redis_conn, settings, request)["session_id"]

    def status(session_id: str) -> str:
        return producer.get_session(redis_conn, session_id)["status"]

    running = submit(epochs=500)  # holds the worker until it is stopped
    wait_for(lambda: status(running) == "running", 120, "the first training to start", interval=0.1)
    waiting = [submit(epochs=1) for _ in range(9)]
    high = submit(epochs=1, priority="high")
    assert producer.get_session(redis_conn, high)["status"] == "queued"
    producer.request_stop(redis_conn, settings, running)

    wait_for(lambda: any(status(s) != "queued" for s in [high, *waiting]), 120, "the next session to start",
             interval=0.05)
    # Cheap end: the nine still queued are cancelled; any that started meanwhile did so after `high`.
    for session_id in waiting:
        if status(session_id) == "queued":
            producer.request_stop(redis_conn, settings, session_id)
    wait_for(lambda: status(high) in ("completed", "failed"), 120, "the high-priority training to end")
    assert status(high) == "completed"
    jobs = {s: Job.fetch(s, connection=redis_conn, serializer=JSONSerializer) for s in [running, high, *waiting]}
    assert jobs[running].ended_at <= jobs[high].started_at
    started_later = [s for s in waiting if jobs[s].started_at is not None]
    assert all(jobs[s].started_at >= jobs[high].ended_at for s in started_later), "a normal session ran first"
    assert len(started_later) < len(waiting)  # the rest were still queued behind it, and cancelled
    assert jobs[high].origin == "urgent" and {jobs[s].origin for s in waiting} == {"gpu-train"}
