"""Integration fixtures: a private redis-server on a free loopback port (never 6379), real
worker and web processes started as `trainhost` starts them."""

from __future__ import annotations

import pytest
from redis import Redis
from rq import Worker
from rq.serializers import JSONSerializer

from tests.helpers.processes import start_trainhost, stop_process, trainhost_env, wait_for
from trainhost.worker.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_conn(redis_server) -> Redis:
    connection = Redis.from_url(redis_server.url)
    connection.flushdb()  # our private server, never the machine's
    yield connection
    connection.close()


@pytest.fixture
def start_worker(redis_server, redis_conn, tmp_path):
    """Start `trainhost worker` processes; each is stopped at teardown."""
    started = []

    def start(*args: str, **settings: str):
        env = trainhost_env(redis_server.url, tmp_path, **settings)
        before = {w.name for w in Worker.all(connection=redis_conn, serializer=JSONSerializer)}
        process = start_trainhost(["worker", *args], env, tmp_path / f"worker{len(started)}.log")
        started.append(process)

        def registered():
            if process.poll() is not None:
                log = (tmp_path / f"worker{len(started) - 1}.log").read_text()
                raise AssertionError(f"worker exited with {process.returncode}:\n{log}")
            names = {w.name for w in Worker.all(connection=redis_conn, serializer=JSONSerializer)}
            return names - before

        process.worker_name = wait_for(registered, 60, "the worker to register").pop()
        return process

    yield start
    for process in started:
        stop_process(process)
