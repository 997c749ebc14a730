"""Integration fixtures: a private redis-server on a free loopback port (never 6379), real
worker and web processes started as `trainhost` starts them."""

from __future__ import annotations

import pytest
from redis import Redis

from tests.helpers.processes import REPO, stop_process, trainhost_env
from trainhost.worker import processes
from trainhost.worker.processes import trainhost_command
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
    """Start `trainhost worker` processes, each returned once registered; each is stopped at teardown."""
    started = []

    def start(*args: str, **settings: str):
        env = trainhost_env(redis_server.url, tmp_path, **settings)
        process = processes.start_worker([*trainhost_command(), "worker", *args], env,
                                         tmp_path / f"worker{len(started)}.log", redis_conn, timeout=60, cwd=REPO)
        started.append(process)
        return process

    yield start
    for process in started:
        stop_process(process)
