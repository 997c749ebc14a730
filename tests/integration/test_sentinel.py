"""Redis high availability: a real master, replica and sentinel; the master dies mid-training."""

from __future__ import annotations

import subprocess
import time

import pytest
from redis import Redis

from tests.helpers.fixtures import strategy_text
from tests.helpers.processes import start_trainhost, stop_process, trainhost_env, wait_for
from trainhost.config import load_settings
from trainhost.jobs import producer
from trainhost.jobs.connection import redis_client
from trainhost.status_api import create_app
from trainhost.worker.redis_server import RedisServer, find_redis_server, free_port

pytestmark = pytest.mark.integration


def start_sentinel(directory, master_port: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
        "sentinel down-after-milliseconds mymaster 1000\n"
        "sentinel failover-timeout mymaster 4000\n"
    )
    process = subprocess.Popen([find_redis_server(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    return process, port


def test_master_killed_during_training_sentinel_fails_over_and_the_session_completes(sample_data_dir, tmp_path):
    # No diskless-sync delay: by default the master waits 5 s before the replica's first sync, and a
    # master killed inside that window leaves a promoted replica with no data at all.
    master = RedisServer(tmp_path / "master", extra_args=["--repl-diskless-sync-delay", "0"]).start()
    replica = RedisServer(tmp_path / "replica", extra_args=["--replicaof", "127.0.0.1", str(master.port)]).start()
    wait_for(lambda: Redis.from_url(replica.url).info("replication").get("master_link_status") == "up", 30,
             "the replica to sync")
    sentinel, sentinel_port = start_sentinel(tmp_path / "sentinel", master.port)
    worker = None
    try:
        settings = load_settings({"redis_url": "", "redis_sentinels": [f"127.0.0.1:{sentinel_port}"],
                                  "data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models")})
        connection = wait_for(lambda: _ping(settings), 30, "the sentinel to know the master")
        env = trainhost_env("", tmp_path, redis_sentinels=f"127.0.0.1:{sentinel_port}",
                            data_dir=str(sample_data_dir), models_dir=str(tmp_path / "models"))
        worker = start_trainhost(["worker"], env, tmp_path / "worker.log")
        app = create_app({"redis_url": "", "redis_sentinels": [f"127.0.0.1:{sentinel_port}"]}).test_client()
        wait_for(lambda: app.get("/health").get_json().get("workers"), 60, "the worker to register")
        # Batch 4: seconds of training, so the failover lands mid-training.
        session_id = producer.submit_training(connection, settings, {
            "strategy_yaml": strategy_text("v3_multi_indicator"), "start_date": "2017-05-01",
            "end_date": "2018-02-07", "epochs": 15, "batch_size": 4})["session_id"]
        wait_for(lambda: (producer.get_session(connection, session_id).get("progress") or {}).get("epoch", 0) >= 2,
                 120, "epoch 2")
        # Replication is asynchronous: the failover under test is the one with a caught-up replica.
        assert Redis.from_url(master.url).execute_command("WAIT", 1, 5000) == 1
        master.kill()
        promoted = wait_for(lambda: _master_port(settings) == replica.port, 60, "the sentinel to promote the replica")
        assert promoted
        done = wait_for(lambda: (s := producer.get_session(connection, session_id))["status"]
                        in ("completed", "failed") and s, 240, "the session to end", interval=0.5)
        assert done["status"] == "completed", (done, (tmp_path / "worker.log").read_text()[-3000:])
        assert done["result"]["training_metrics"]["epochs_trained"] == 15
        health = app.get("/health")
        assert health.status_code == 200 and health.get_json()["workers"] == 1  # the web app followed too
        assert worker.poll() is None
    finally:
        if worker is not None:
            stop_process(worker)
        sentinel.kill()
        replica.stop()
        master.stop()


def _ping(settings):
    try:
        connection = redis_client(settings)
        return connection if connection.ping() else None
    except Exception:
        return None


def _master_port(settings) -> int | None:
    from redis.sentinel import Sentinel

    host, _, port = settings.redis_sentinels[0].rpartition(":")
    try:
        return Sentinel([(host, int(port))], socket_timeout=1).discover_master("mymaster")[1]
    except Exception:
        time.sleep(0.2)
        return None
