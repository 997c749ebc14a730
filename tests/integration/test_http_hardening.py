"""The HTTP side under attack, with real processes: a flood of idle and half-sent connections against
`trainhost web`, and a Redis that is full (maxmemory reached, noeviction) behind the app."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from redis import Redis
from redis.exceptions import OutOfMemoryError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from tests.helpers.fixtures import strategy_text
from tests.helpers.processes import start_web, stop_process, wait_for
from tests.unit.test_bad_input import write_model_folder
from trainhost.config import load_settings
from trainhost.jobs import producer
from trainhost.status_api import create_app
from trainhost.worker.redis_server import RedisServer

pytestmark = pytest.mark.integration
IDLE, HALF_SENT = 150, 50
CHANNEL_TIMEOUT = 3  # seconds, so that the test can also see idle connections being closed


def half_sent_request(index: int) -> bytes:
    """Every other one stops inside the headers, the rest inside an announced body."""
    if index % 2:
        return b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    return (b"POST /training/start HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n{\"strategy_yaml\": \"")


def open_flood(port: int) -> list[socket.socket]:
    sockets = []
    for index in range(IDLE + HALF_SENT):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if index >= IDLE:
            sock.sendall(half_sent_request(index))
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.01)
    try:
        return sock.recv(1 << 16) == b""
    except TimeoutError:
        return False
    except OSError:  # reset: closed as well
        return True


def test_health_answers_under_a_flood_of_idle_and_half_sent_connections(redis_server, redis_conn, tmp_path):
    web, url = start_web(redis_server.url, tmp_path, web_channel_timeout=str(CHANNEL_TIMEOUT))
    sockets = []
    try:
        sockets = open_flood(int(url.rsplit(":", 1)[1]))
        time.sleep(0.5)  # let the server's loop take them all in
        for _ in range(5):  # a bounded liveness check, not a speed measurement
            answer = requests.get(f"{url}/health", timeout=1)
            assert answer.status_code == 200 and answer.json()["service"] == "training-host"
        assert requests.get(f"{url}/training/sessions", timeout=1).status_code == 200
        # The idle and half-sent connections are closed once web_channel_timeout has passed.
        wait_for(lambda: all(closed_by_server(sock) for sock in sockets), CHANNEL_TIMEOUT + 15,
                 "the server to close the idle connections", interval=0.5)
        assert requests.get(f"{url}/health", timeout=1).status_code == 200
    finally:
        for sock in sockets:
            sock.close()
        stop_process(web)
    assert "Traceback" not in (tmp_path / "web.log").read_text()


# ---------------------------------------------------------------------------------------------
# A full Redis: it answers, serves reads, refuses writes.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def full_redis(tmp_path):
    """A private redis-server (the shared one stays untouched) and a function that fills it."""
    server = RedisServer(tmp_path / "full-redis", appendonly=False).start()
    connection = Redis.from_url(server.url)

    def fill() -> None:
        for index in range(40):
            connection.set(f"filler:{index}", b"x" * 100_000)
        used = connection.info("memory")["used_memory"]
        connection.config_set("maxmemory-policy", "noeviction")
        connection.config_set("maxmemory", max(1 << 20, used - (2 << 20)))
        with pytest.raises(OutOfMemoryError):
            connection.set("one-more", b"x")

    yield server, connection, fill
    connection.config_set("maxmemory", 0)
    connection.close()
    server.stop()


def lost_running_session(connection: Redis, settings, request: dict) -> str:
    """A session that looks running on a worker that stopped sending heartbeats: the kind of read
    that used to clean up (a write) before answering."""
    session_id = producer.submit_training(connection, settings, request)["session_id"]
    job = Job.fetch(session_id, connection=connection, serializer=JSONSerializer)
    stale = datetime.now(UTC) - timedelta(minutes=5)
    connection.lrem("rq:queue:training", 0, session_id)
    connection.hset(job.key, mapping={"status": JobStatus.STARTED.value, "worker_name": "gone:cpu-1",
                                      "started_at": stale.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                                      "last_heartbeat": stale.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
    registry = StartedJobRegistry("training", connection=connection, serializer=JSONSerializer)
    connection.zadd(registry.key, {f"{session_id}:lost-execution": stale.timestamp()})  # expired: abandoned
    return session_id


def test_a_full_redis_keeps_reads_working_and_refuses_writes_as_out_of_memory(full_redis, sample_data_dir,
                                                                             tmp_path):
    server, connection, fill = full_redis
    models = tmp_path / "models"
    write_model_folder(models / "some_strategy" / "1h_v1", strategy_text("v3_multi_indicator"))
    overrides = {"redis_url": server.url, "data_dir": str(sample_data_dir), "models_dir": str(models)}
    settings = load_settings(overrides)
    request = {"strategy_yaml": strategy_text("v3_multi_indicator"), "start_date": "2017-05-01",
               "end_date": "2018-02-07", "epochs": 2}
    queued = producer.submit_training(connection, settings, request)["session_id"]
    lost = lost_running_session(connection, settings, request)
    client = create_app(overrides).test_client()
    fill()

    for path in ("/health", "/health/detailed"):
        health = client.get(path)
        assert health.status_code == 200, health.get_json()
        body = health.get_json()
        assert body["status"] == "degraded" and body["error"]["code"] == "redis_out_of_memory"
        assert "out of memory" in body["error"]["message"] and "unreachable" not in json.dumps(body)
    assert client.get("/health/detailed").get_json()["redis"]["out_of_memory"] is True
    listing = client.get("/training/sessions")
    assert listing.status_code == 200 and {s["session_id"] for s in listing.get_json()["sessions"]} == {queued, lost}
    assert client.get("/training/sessions?status=queued").get_json()["total"] == 1
    for session_id, status in ((queued, "queued"), (lost, "running")):
        answer = client.get(f"/training/status/{session_id}")
        assert answer.status_code == 200 and answer.get_json()["status"] == status, answer.get_json()
        assert client.get(f"/training/sessions/{session_id}/history").status_code == 200
    for path in ("/", f"/sessions/{queued}", "/metrics"):
        assert client.get(path).status_code == 200, path

    depth = connection.llen("rq:queue:training")
    writes = [("/training/start", request), ("/training/evaluate", {"model_path": "some_strategy/1h_v1"}),
              ("/training/stop", {"session_id": queued})]
    for path, body in writes:
        refused = client.post(path, json=body)
        assert refused.status_code == 507, (path, refused.get_json())
        error = refused.get_json()["error"]
        assert error["code"] == "redis_out_of_memory" and "out of memory" in error["message"], error
    assert connection.llen("rq:queue:training") == depth and not connection.llen("rq:queue:evaluation")
    assert client.get(f"/training/status/{queued}").get_json()["status"] == "queued"

    connection.config_set("maxmemory", 0)  # memory back: the same service accepts work again
    assert client.get("/health").get_json()["status"] in ("healthy", "degraded")
    assert "error" not in client.get("/health").get_json()
    assert client.post("/training/start", json=request).status_code == 202
