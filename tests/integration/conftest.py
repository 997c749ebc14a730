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


EXPERIMENTS_TOKEN = "experiments-token"
EXPERIMENTS_AUTH = {"Authorization": f"Bearer {EXPERIMENTS_TOKEN}"}
EXPERIMENT_DATES = {"start_date": "2017-05-01", "end_date": "2018-02-07"}


@pytest.fixture
def lab(redis_server, redis_conn, start_worker, sample_data_dir, tmp_path):
    """A web process (with an api_token) and workers sharing one Redis, data, models and experiments
    folders; `submit` posts an experiment on v3_multi_indicator unless given another `base`."""
    import requests

    from tests.helpers.fixtures import strategy_text
    from tests.helpers.processes import start_web, wait_for

    settings = {"data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models"),
                "experiments_dir": str(tmp_path / "experiments"), "stop_grace_seconds": "10",
                "api_token": EXPERIMENTS_TOKEN}
    web, base = start_web(redis_server.url, tmp_path, **settings)

    class Lab:
        url = base

        @staticmethod
        def worker():
            return start_worker(**settings)

        @staticmethod
        def submit(epochs: int = 2, **body):
            body.setdefault("base", {"strategy_yaml": strategy_text("v3_multi_indicator"), **EXPERIMENT_DATES,
                                     "epochs": epochs})
            return requests.post(f"{base}/experiments", json=body, headers=EXPERIMENTS_AUTH, timeout=60)

        @staticmethod
        def get(experiment_id):
            return requests.get(f"{base}/experiments/{experiment_id}", timeout=30).json()

        @staticmethod
        def wait_until(experiment_id, done, timeout, what):
            return wait_for(lambda: done(e := Lab.get(experiment_id)) and e, timeout, what, interval=0.5)

        @staticmethod
        def wait(experiment_id, statuses, timeout=240):
            return Lab.wait_until(experiment_id, lambda e: e["status"] in statuses, timeout,
                                  f"experiment {experiment_id} to reach {statuses}")

    yield Lab
    stop_process(web)


@pytest.fixture
def browser(tmp_path):
    """Headless Debian chromium with a new empty profile (tests/helpers/browser.py)."""
    from tests.helpers.browser import chromium

    driver = chromium(tmp_path)
    yield driver
    driver.quit()
