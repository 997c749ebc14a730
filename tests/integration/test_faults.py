"""Faults survived: real redis-server and worker processes, killed, restarted, starved."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.helpers.fixtures import strategy_text
from tests.helpers.processes import start_trainhost, stop_process, trainhost_env, wait_for
from trainhost.config import load_settings
from trainhost.jobs import keys, producer
from trainhost.jobs.connection import connect
from trainhost.jobs.sessions import HEARTBEAT_TTL, history
from trainhost.worker.lost import REAP_INTERVAL
from trainhost.worker.redis_server import RedisServer

pytestmark = pytest.mark.integration
DATES = {"start_date": "2017-05-01", "end_date": "2018-02-07"}
# Small batches keep a 12-15 epoch training running for seconds (about 0.4 s an epoch here), so a
# fault injected after epoch 2 or 3 lands mid-training, not after the end.
SLOW_BATCH = 4


def settings_for(url: str, data_dir: Path, models_dir: Path, **extra):
    return load_settings({"redis_url": url, "data_dir": str(data_dir), "models_dir": str(models_dir), **extra})


def submit(connection, settings, **body) -> str:
    request = {"strategy_yaml": strategy_text(body.pop("strategy", "v3_multi_indicator")), **DATES, **body}
    return producer.submit_training(connection, settings, request)["session_id"]


def session(connection, session_id):
    return producer.get_session(connection, session_id)


def wait_epoch(connection, session_id, epoch, timeout=120):
    wait_for(lambda: ((session(connection, session_id).get("progress") or {}).get("epoch") or 0) >= epoch,
             timeout, f"{session_id} to reach epoch {epoch}", interval=0.1)


def wait_status(connection, session_id, statuses, timeout=120):
    return wait_for(lambda: (s := session(connection, session_id))["status"] in statuses and s, timeout,
                    f"{session_id} to reach {statuses}", interval=0.2)


def horse_of(worker: psutil.Process) -> psutil.Process:
    return wait_for(lambda: worker.children(), 30, "the work horse")[0]


def complete_folders(models_dir: Path) -> list[Path]:
    return sorted(p.parent for p in models_dir.glob("*/*_v*/COMPLETE"))


@pytest.fixture
def env_settings(sample_data_dir, tmp_path):
    return {"data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models")}


def test_worker_killed_mid_training_is_detected_and_resumed_by_a_new_worker(
        redis_server, redis_conn, start_worker, env_settings, sample_data_dir, tmp_path):
    settings = settings_for(redis_server.url, sample_data_dir, tmp_path / "models")
    worker = start_worker(**env_settings)
    session_id = submit(redis_conn, settings, epochs=12, batch_size=SLOW_BATCH)
    wait_epoch(redis_conn, session_id, 3)
    for process in [*psutil.Process(worker.pid).children(recursive=True), psutil.Process(worker.pid)]:
        process.kill()  # the whole worker is lost, as in a machine crash
    # Only live workers judge a session lost (a status read never does): the new one watches the
    # session's heartbeat for the grace, then requeues it (retries are on for training) and takes it.
    replacement = start_worker(**env_settings)
    started = time.monotonic()
    wait_for(lambda: session(redis_conn, session_id)["worker"] == replacement.worker_name, HEARTBEAT_TTL + 30,
             "the new worker to take the session over", interval=0.2)
    assert HEARTBEAT_TTL <= time.monotonic() - started + 1  # not before the grace
    done = wait_status(redis_conn, session_id, {"completed", "failed"}, timeout=240)
    assert done["status"] == "completed", done
    assert done["result"]["training_metrics"]["epochs_trained"] == 12
    assert len(complete_folders(tmp_path / "models")) == 1
    artifact_history = json.loads((Path(done["result"]["model_path"]) / "history.json").read_text())
    assert [h["epoch"] for h in artifact_history] == list(range(1, 13))
    epochs = [h["epoch"] for h in history(redis_conn, session_id)]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 12  # no duplicates


def test_worker_lost_without_retries_fails_with_a_clear_reason(
        redis_server, redis_conn, start_worker, env_settings, sample_data_dir, tmp_path):
    settings = settings_for(redis_server.url, sample_data_dir, tmp_path / "models", training_retries=0)
    worker = start_worker(**env_settings)
    session_id = submit(redis_conn, settings, epochs=200, batch_size=16)
    wait_epoch(redis_conn, session_id, 1)
    for process in [*psutil.Process(worker.pid).children(recursive=True), psutil.Process(worker.pid)]:
        process.kill()
    start_worker(**env_settings)  # the worker that finds the session lost
    failed = wait_status(redis_conn, session_id, {"failed"}, timeout=HEARTBEAT_TTL + 30)
    assert "worker running this session was lost" in failed["error"]
    assert not (tmp_path / "models" / ".checkpoints" / f"{session_id}.pt").exists()  # an ended session keeps none


def test_work_horse_killed_fails_clearly_and_the_worker_serves_the_next(
        redis_server, redis_conn, start_worker, env_settings, sample_data_dir, tmp_path):
    settings = settings_for(redis_server.url, sample_data_dir, tmp_path / "models")
    worker = start_worker(**env_settings)
    first = submit(redis_conn, settings, epochs=200, batch_size=16)
    wait_epoch(redis_conn, first, 1)
    horse_of(psutil.Process(worker.pid)).send_signal(signal.SIGKILL)  # stand-in for the OOM killer
    failed = wait_status(redis_conn, first, {"failed", "queued"}, timeout=30)
    assert failed["status"] == "failed"
    assert "killed" in failed["error"] and "out of memory" in failed["error"]
    second = submit(redis_conn, settings, epochs=1)
    assert wait_status(redis_conn, second, {"completed", "failed"})["status"] == "completed"
    assert worker.poll() is None


def test_redis_restarted_mid_training_the_session_still_completes(
        redis_conn, start_worker, sample_data_dir, tmp_path):
    server = RedisServer(tmp_path / "aof-redis").start()  # AOF on
    try:
        connection = connect(server.url)
        settings = settings_for(server.url, sample_data_dir, tmp_path / "models")
        env = trainhost_env(server.url, tmp_path, data_dir=str(sample_data_dir), models_dir=str(tmp_path / "models"))
        worker = start_trainhost(["worker"], env, tmp_path / "aof-worker.log")
        try:
            session_id = submit(connection, settings, epochs=15, batch_size=SLOW_BATCH)
            wait_epoch(connection, session_id, 2)
            server.stop()
            time.sleep(2)
            server.start()  # same port, data back from the AOF
            done = wait_status(connection, session_id, {"completed", "failed"}, timeout=240)
            assert done["status"] == "completed", done
            assert done["result"]["training_metrics"]["epochs_trained"] == 15
            assert worker.poll() is None  # the worker rode out the restart
            epochs = [h["epoch"] for h in history(connection, session_id)]
            assert epochs == list(range(1, 16))  # progress written before and after the restart
        finally:
            stop_process(worker)
    finally:
        server.stop()


def test_timeout_fails_the_session_and_the_worker_goes_on(
        redis_server, redis_conn, start_worker, env_settings, sample_data_dir, tmp_path):
    worker = start_worker(**env_settings)
    slow = settings_for(redis_server.url, sample_data_dir, tmp_path / "models", session_timeout_minutes=0.1)
    session_id = submit(redis_conn, slow, epochs=500, batch_size=16)
    failed = wait_status(redis_conn, session_id, {"failed", "completed"}, timeout=60)
    assert failed["status"] == "failed"
    assert failed["error"].startswith("timed out after 0.1 minutes")
    wait_for(lambda: psutil.Process(worker.pid).children() == [], 10, "the work horse to be gone")
    normal = settings_for(redis_server.url, sample_data_dir, tmp_path / "models")
    next_session = submit(redis_conn, normal, epochs=1)
    assert wait_status(redis_conn, next_session, {"completed", "failed"})["status"] == "completed"


def test_sigterm_checkpoints_requeues_and_a_new_worker_resumes(
        redis_server, redis_conn, start_worker, env_settings, sample_data_dir, tmp_path):
    settings = settings_for(redis_server.url, sample_data_dir, tmp_path / "models")
    worker = start_worker(**env_settings)
    session_id = submit(redis_conn, settings, epochs=12, batch_size=SLOW_BATCH)
    wait_epoch(redis_conn, session_id, 3)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    suspended = session(redis_conn, session_id)
    assert suspended["status"] == "queued", (suspended["error"], suspended["progress"])  # back in the queue
    assert "suspended" in suspended["progress"]["message"]
    start_worker(**env_settings)
    done = wait_status(redis_conn, session_id, {"completed", "failed"}, timeout=240)
    assert done["status"] == "completed", done
    artifact_history = json.loads((Path(done["result"]["model_path"]) / "history.json").read_text())
    assert [h["epoch"] for h in artifact_history] == list(range(1, 13))
    assert len(complete_folders(tmp_path / "models")) == 1


def test_unwritable_model_folder_fails_with_the_reason_and_nothing_marked_complete(
        redis_server, redis_conn, start_worker, env_settings, sample_data_dir, tmp_path):
    models = tmp_path / "models"
    (models / "v3_multi_indicator_example").parent.mkdir(parents=True)
    (models / "v3_multi_indicator_example").write_text("a file where the strategy's folder should be")
    start_worker(**env_settings)
    settings = settings_for(redis_server.url, sample_data_dir, models)
    failed = wait_status(redis_conn, submit(redis_conn, settings, epochs=1), {"failed", "completed"})
    assert failed["status"] == "failed"
    assert "v3_multi_indicator_example" in failed["error"]
    assert "Traceback" not in failed["error"]
    assert complete_folders(models) == []
    ok = submit(redis_conn, settings, strategy="v3_minimal", epochs=1)
    assert wait_status(redis_conn, ok, {"completed", "failed"})["status"] == "completed"


BAD_CSV = {
    "NANPX": "2017-05-01 00:00:00+00:00,1.1,1.2,1.0,nan,100\n",
    "INFPX": "2017-05-01 00:00:00+00:00,1.1,inf,1.0,1.1,100\n",
    "DUPTS": "{prev},1.1,1.2,1.0,1.1,100\n",
    "UNSORTED": "2017-04-01 00:00:00+00:00,1.1,1.2,1.0,1.1,100\n",
    "TRUNC": "2017-05-01 00:00:00+00:00,1.1,1.2\n",
}


def test_bad_data_fails_with_the_file_and_row_and_zero_volume_is_fine(
        redis_server, redis_conn, start_worker, sample_data_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    lines = (sample_data_dir / "EURUSD_1h.csv").read_text().splitlines()
    header, rows = lines[0], lines[1:]
    for symbol, bad in BAD_CSV.items():
        middle = 2500
        bad_row = bad.format(prev=rows[middle - 1].split(",")[0])
        (data / f"{symbol}_1h.csv").write_text("\n".join([header, *rows[:middle]]) + "\n" + bad_row
                                               + "\n".join(rows[middle:]) + "\n")
    zero_volume = [",".join([*r.split(",")[:5], "0"]) for r in rows]
    (data / "ZEROVOL_1h.csv").write_text("\n".join([header, *zero_volume]) + "\n")
    start_worker(data_dir=str(data), models_dir=str(tmp_path / "models"))
    settings = settings_for(redis_server.url, data, tmp_path / "models")
    ids = {symbol: submit(redis_conn, settings, symbols=[symbol], epochs=1) for symbol in [*BAD_CSV, "ZEROVOL"]}
    for symbol, session_id in ids.items():
        outcome = wait_status(redis_conn, session_id, {"failed", "completed"})
        if symbol == "ZEROVOL":
            assert outcome["status"] == "completed", outcome
            continue
        assert outcome["status"] == "failed", (symbol, outcome)
        assert f"{symbol}_1h.csv" in outcome["error"], outcome["error"]
        assert "line" in outcome["error"] or "row" in outcome["error"], outcome["error"]


def test_planted_jobs_are_refused_by_a_real_worker(redis_conn, start_worker, tmp_path):
    import pickle

    start_worker()
    queue = Queue("training", connection=redis_conn, serializer=JSONSerializer)
    marker = tmp_path / "pwned"
    jobs = [queue.enqueue(func, arg) for func, arg in
            (("os.system", f"touch {marker}"), ("subprocess.call", ["touch", str(marker)]),
             ("builtins.eval", f"open({str(marker)!r}, 'w')"))]
    pickled = queue.enqueue("trainhost.jobs.training.run_training", {})
    redis_conn.hset(pickled.key, "data", pickle.dumps(("os.system", None, (f"touch {marker}",), {})))
    for job in [*jobs, pickled]:
        wait_for(lambda j=job: Job.fetch(j.id, connection=redis_conn, serializer=JSONSerializer).get_status()
                 == "failed", 30, f"{job.id} to be refused")
    assert not marker.exists()
    assert os.path.exists(str(tmp_path))


def test_a_lost_job_record_reads_as_not_found_and_progress_writes_do_not_recreate_it(
        redis_server, redis_conn, env_settings):
    """A failover to a replica that had not caught up loses the job hash while its training runs on."""
    from trainhost.jobs import keys
    from trainhost.jobs.progress import SessionReporter
    from trainhost.status_api import create_app

    queue = Queue("training", connection=redis_conn, serializer=JSONSerializer)
    kept = queue.enqueue("trainhost.jobs.training.run_training", {}, job_id="kept", meta={"kind": "training"})
    lost = queue.enqueue("trainhost.jobs.training.run_training", {}, job_id="lost", meta={"kind": "training"})
    redis_conn.zadd(keys.sessions_key(), {"kept": 1, "lost": 2})

    reporter = SessionReporter(lost)
    reporter.phase("training")
    wait_for(lambda: Job.fetch("lost", connection=redis_conn, serializer=JSONSerializer).meta.get("phase"),
             10, "the first progress write")
    redis_conn.delete(lost.key)
    reporter.phase("evaluating")
    reporter.close()
    assert not redis_conn.exists(lost.key)

    redis_conn.hset(lost.key, "meta", json.dumps({"phase": "training"}))  # what an unguarded HSET leaves
    with pytest.raises(producer.RequestError) as missing:
        session(redis_conn, "lost")
    assert missing.value.status == 404
    assert [s["session_id"] for s in producer.list_sessions(redis_conn)["sessions"]] == [kept.id]
    client = create_app({"redis_url": redis_server.url, **env_settings}).test_client()
    assert client.get("/metrics").status_code == 200
    assert client.get("/training/status/lost").status_code == 404


# -- exactly once: a worker paused, Redis away, Redis full, Redis emptied -----------------------------
def private_worker(server_url: str, connection, tmp_path: Path, name: str, started: list, **settings):
    """`trainhost worker` on a test's own redis-server, once it has registered (stopped by the test)."""
    env = trainhost_env(server_url, tmp_path, **settings)
    before = {w.name for w in Worker.all(connection=connection, serializer=JSONSerializer)}
    process = start_trainhost(["worker"], env, tmp_path / f"{name}.log")
    started.append(process)
    names = wait_for(lambda: {w.name for w in Worker.all(connection=connection, serializer=JSONSerializer)} - before,
                     60, f"{name} to register")
    process.worker_name = names.pop()
    process.log_path = tmp_path / f"{name}.log"
    return process


def worker_processes(worker) -> list[psutil.Process]:
    """The worker and its work horse: what a paused VM or a SIGSTOP freezes together."""
    parent = psutil.Process(worker.pid)
    return [parent, *parent.children(recursive=True)]


class Poller:
    """Polls a session's status, as dashboards and the backend do, until stopped; records what it saw
    ("unreadable" while Redis does not answer)."""

    def __init__(self, connection, session_id: str, interval: float = 0.25):
        self.seen: list[str] = []
        self._stop = threading.Event()

        def poll():
            while not self._stop.is_set():
                try:
                    self.seen.append(session(connection, session_id)["status"])
                except (producer.RequestError, RedisError):
                    self.seen.append("unreadable")
                self._stop.wait(interval)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(30)
        return self.seen


def statuses_while(connection, session_id: str, seconds: float) -> list[str]:
    poller = Poller(connection, session_id)
    time.sleep(seconds)
    return poller.stop()


def assert_trained_once(connection, session_id: str, models_dir: Path, epochs: int | None, attempts: int | None = None):
    """One model folder, the session's, and one unbroken history. `epochs` None: a training long
    enough to outlast an outage, stopped once the test is past it (then it ends `stopped`, with
    the partial model of the epochs it reached)."""
    done = wait_status(connection, session_id, {"completed", "failed", "stopped"}, timeout=240)
    assert done["status"] == ("completed" if epochs else "stopped"), done
    trained = done["result"]["training_metrics"]["epochs_trained"]
    assert trained == (epochs or trained) and trained >= 1
    assert complete_folders(models_dir) == [Path(done["result"]["model_path"])]  # one model, the session's
    recorded = [h["epoch"] for h in history(connection, session_id)]
    assert recorded == list(range(1, len(recorded) + 1)) and len(recorded) >= trained
    artifact_history = json.loads((Path(done["result"]["model_path"]) / "history.json").read_text())
    assert [h["epoch"] for h in artifact_history] == recorded
    if attempts is not None:  # the counter: 1 at submission, then one per attempt started
        assert int(connection.get(keys.attempt_key(session_id))) == 1 + attempts
    return done


def stop_after_the_outage(connection, settings, session_id: str) -> None:
    """The outage (or takeover) is over and the session rode it out running: stop it rather than wait
    for its epochs."""
    assert session(connection, session_id)["status"] == "running"
    producer.request_stop(connection, settings, session_id)


def test_worker_paused_past_the_grace_trains_once_and_shows_running(
        redis_server, redis_conn, start_worker, env_settings, sample_data_dir, tmp_path):
    """SIGSTOP of the worker and its work horse for longer than the grace, status polled meanwhile:
    no worker is left to judge it lost, and a status read never does; it resumes and trains once."""
    settings = settings_for(redis_server.url, sample_data_dir, tmp_path / "models")
    worker = start_worker(**env_settings)
    session_id = submit(redis_conn, settings, epochs=12, batch_size=SLOW_BATCH)
    wait_epoch(redis_conn, session_id, 3)
    frozen = worker_processes(worker)
    for process in frozen:
        process.suspend()
    try:
        seen = statuses_while(redis_conn, session_id, HEARTBEAT_TTL + 10)
    finally:
        for process in frozen:
            process.resume()
    assert set(seen) == {"running"}, seen
    assert_trained_once(redis_conn, session_id, tmp_path / "models", 12, attempts=1)


def test_worker_paused_while_another_takes_over_is_fenced_out(
        redis_server, redis_conn, start_worker, env_settings, sample_data_dir, tmp_path):
    """The paused worker's session is judged lost by a live worker, which resumes it from the
    checkpoint; the paused one, resumed, finds its attempt superseded and writes nothing more."""
    settings = settings_for(redis_server.url, sample_data_dir, tmp_path / "models")
    paused = start_worker(**env_settings)
    session_id = submit(redis_conn, settings, epochs=5000, batch_size=SLOW_BATCH)  # outlasts the takeover
    wait_epoch(redis_conn, session_id, 3)
    other = start_worker(**env_settings)
    frozen = worker_processes(paused)
    for process in frozen:
        process.suspend()
    try:
        wait_for(lambda: session(redis_conn, session_id)["worker"] == other.worker_name, HEARTBEAT_TTL + 40,
                 "the live worker to take the session over", interval=0.5)
        wait_epoch(redis_conn, session_id, 5)
    finally:
        for process in frozen:
            process.resume()
    stop_after_the_outage(redis_conn, settings, session_id)
    done = assert_trained_once(redis_conn, session_id, tmp_path / "models", None)
    assert done["worker"] == other.worker_name
    log = wait_for(lambda: "superseded" in (text := (tmp_path / "worker0.log").read_text()) and text, 30,
                   "the paused worker to notice it was superseded")
    assert "Traceback" not in log.split("superseded", 1)[1]
    assert paused.poll() is None and other.poll() is None


@dataclass
class Outage:
    """A long training on a Redis of its own, run by an owner worker and watched by a standby one."""

    server: RedisServer
    connection: Redis
    settings: Any
    session_id: str
    workers: list


@contextmanager
def owned_training(sample_data_dir: Path, tmp_path: Path, name: str) -> Iterator[Outage]:
    server = RedisServer(tmp_path / name).start()
    started: list = []
    try:
        connection = connect(server.url)
        settings = settings_for(server.url, sample_data_dir, tmp_path / "models")
        env = {"data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models")}
        owner = private_worker(server.url, connection, tmp_path, "owner", started, **env)
        session_id = submit(connection, settings, epochs=5000, batch_size=SLOW_BATCH)
        wait_epoch(connection, session_id, 2)
        standby = private_worker(server.url, connection, tmp_path, "standby", started, **env)
        time.sleep(REAP_INTERVAL * 2)  # the standby has watched the session beat
        yield Outage(server, connection, settings, session_id, [owner, standby])
    finally:
        for process in started:
            stop_process(process)
        server.stop()


def assert_rode_it_out(case: Outage, seen: list[str], models_dir: Path) -> None:
    """Running throughout (never requeued), trained once, and both workers still serving."""
    assert "running" in seen and "queued" not in seen, Counter(seen)
    stop_after_the_outage(case.connection, case.settings, case.session_id)
    assert_trained_once(case.connection, case.session_id, models_dir, None, attempts=1)
    assert all(worker.poll() is None for worker in case.workers)


def test_redis_killed_for_longer_than_the_grace_and_restarted_from_its_aof_trains_once(
        sample_data_dir, tmp_path):
    with owned_training(sample_data_dir, tmp_path, "aof-redis") as case:
        # Polling through the outage, without retries: the first read after it comes at once.
        poller = Poller(Redis.from_url(case.server.url, socket_connect_timeout=1, socket_timeout=2), case.session_id)
        case.server.kill()  # as a crash: the AOF keeps what reached it
        time.sleep(HEARTBEAT_TTL + 5)
        case.server.start()  # same port
        time.sleep(HEARTBEAT_TTL)
        assert_rode_it_out(case, poller.stop(), tmp_path / "models")


def test_redis_full_for_longer_than_the_grace_trains_once(sample_data_dir, tmp_path):
    with owned_training(sample_data_dir, tmp_path, "full-redis") as case:
        connection = case.connection
        connection.set("test:filler", b"x" * 3 * 2**20)  # above the limit set next: every write refused
        connection.config_set("maxmemory-policy", "noeviction")
        connection.config_set("maxmemory", "2mb")
        try:
            with pytest.raises(RedisError):
                connection.set("test:probe", "1")
            seen = statuses_while(connection, case.session_id, HEARTBEAT_TTL + 15)
        finally:
            connection.config_set("maxmemory", "0")
            connection.delete("test:filler")
        assert_rode_it_out(case, seen, tmp_path / "models")  # the idle standby rode it out too


def test_redis_restarted_empty_the_worker_registers_again_and_the_id_is_free(sample_data_dir, tmp_path):
    server = RedisServer(tmp_path / "empty-redis", appendonly=False).start()
    started = []
    try:
        connection = connect(server.url)
        settings = settings_for(server.url, sample_data_dir, tmp_path / "models")
        env = {"data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models")}
        worker = private_worker(server.url, connection, tmp_path, "worker", started, **env)
        session_id = submit(connection, settings, task_id="kept-id", epochs=200, batch_size=16)
        wait_epoch(connection, session_id, 1)
        server.stop()
        server.start()  # no AOF, no RDB: empty
        wait_for(lambda: [w.name for w in Worker.all(connection=connection, serializer=JSONSerializer)]
                 == [worker.worker_name], 20, "the worker to register again")
        wait_for(lambda: "gone from Redis" in worker.log_path.read_text(), 30,
                 "the worker to say the session's record is gone")
        wait_for(lambda: psutil.Process(worker.pid).children() == [], 30, "the lost session's work horse to end")
        with pytest.raises(producer.RequestError) as missing:
            session(connection, session_id)
        assert missing.value.status == 404
        assert not connection.exists(Job.key_for(session_id))  # no half-record came back
        assert producer.list_sessions(connection)["sessions"] == []
        again = submit(connection, settings, task_id="kept-id", epochs=2)
        assert again == "kept-id"
        assert_trained_once(connection, again, tmp_path / "models", 2)
    finally:
        for process in started:
            stop_process(process)
        server.stop()
