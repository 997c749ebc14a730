"""Real redis-server, real `trainhost worker` and `trainhost web` processes."""

from __future__ import annotations

import time

import pytest
import requests
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from tests.helpers.processes import start_trainhost, stop_process, trainhost_env, wait_for, wait_http
from trainhost.status_api import create_app
from trainhost.worker.redis_server import RedisServer, free_port

pytestmark = pytest.mark.integration


def finished(job):
    return job.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.FAILED)


def test_worker_runs_an_allow_listed_job_that_writes_meta(redis_conn, start_worker):
    start_worker("--queues", "training")
    queue = Queue("training", connection=redis_conn, serializer=JSONSerializer)
    job = queue.enqueue("tests.helpers.jobs.tiny_job", 21)
    wait_for(lambda: finished(job), 30, "the tiny job")
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == {"doubled": 42}
    job.refresh()
    assert job.meta["phase"] == "done"


def test_worker_refuses_what_is_not_allow_listed_and_keeps_serving(redis_conn, start_worker, tmp_path):
    start_worker("--queues", "training")
    queue = Queue("training", connection=redis_conn, serializer=JSONSerializer)
    marker = tmp_path / "pwned"
    bad = queue.enqueue("os.system", f"touch {marker}")
    good = queue.enqueue("tests.helpers.jobs.tiny_job", 1)
    wait_for(lambda: finished(bad) and finished(good), 30, "both jobs")
    assert bad.get_status() == JobStatus.FAILED
    assert "not an allowed job function" in bad.latest_result().exc_string
    assert not marker.exists()
    assert good.get_status() == JobStatus.FINISHED


def test_status_app_shows_the_worker(redis_server, redis_conn, start_worker):
    worker = start_worker("--queues", "training,evaluation")
    client = create_app({"redis_url": redis_server.url}).test_client()
    body = client.get("/health/detailed").get_json()
    assert body["redis"]["ok"] is True and body["redis"]["version"].startswith("7")
    names = [w["name"] for w in body["workers"]]
    assert worker.worker_name in names
    entry = body["workers"][names.index(worker.worker_name)]
    assert entry["state"] == "idle"
    assert entry["heartbeat_age_seconds"] < 30
    assert ":cpu-" in worker.worker_name


def test_web_process_serves_health_and_answers_503_when_redis_stops(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        port = free_port()
        env = trainhost_env(server.url, tmp_path, port=str(port))
        web = start_trainhost(["web"], env, tmp_path / "web.log")
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            response = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
            assert response.status_code == 200 and response.json()["healthy"] is True
            server.stop()
            down = requests.get(f"http://127.0.0.1:{port}/health", timeout=10)
            assert down.status_code == 503
            assert down.json()["error"]["code"] == "redis_unavailable"
            server.start()  # same port: the app recovers by itself
            wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200,
                     20, "health to recover")
        finally:
            stop_process(web)


def test_worker_alone_starts_and_stops_the_embedded_redis(tmp_path):
    env = trainhost_env("", tmp_path)
    worker = start_trainhost(["worker", "--burst"], env, tmp_path / "worker.log")
    try:
        assert worker.wait(60) == 0, (tmp_path / "worker.log").read_text()
    finally:
        stop_process(worker)
    log = (tmp_path / "worker.log").read_text()
    assert "embedded redis-server started" in log
    assert "embedded redis-server stopped" in log
    assert (tmp_path / "var" / "redis" / "appendonlydir").is_dir()  # AOF on
    assert not (tmp_path / "var" / "redis.url").exists()


def test_worker_start_up_time_is_logged(redis_conn, start_worker, tmp_path):
    started = time.monotonic()
    start_worker("--queues", "training")
    assert time.monotonic() - started < 60
    assert "ready in" in (tmp_path / "worker0.log").read_text()
