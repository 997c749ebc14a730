"""Each session once: one id claimed by one submission, one stop accepted, one DELETE, a reused id
starting clean, and a resumed history holding every epoch of its checkpoint. Real redis-server;
threads stand in for concurrent callers. (Faults — paused workers, Redis away, full or emptied — are
in test_faults.py.)"""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from tests.helpers.fixtures import strategy_text
from tests.helpers.processes import start_web, stop_process, wait_for
from trainhost.config import load_settings
from trainhost.jobs import keys, producer
from trainhost.jobs.attempts import checkpoint_file
from trainhost.jobs.progress import SessionReporter
from trainhost.jobs.sessions import history

pytestmark = pytest.mark.integration
DATES = {"start_date": "2017-05-01", "end_date": "2018-02-07"}
CALLERS = 50


def together(calls: list, workers: int = 16) -> list:
    """Run the calls at once (a barrier releases them together); each outcome is ("ok", value),
    ("refused", status) or ("raised", exception)."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        try:
            return "ok", call()
        except producer.RequestError as exc:
            return "refused", exc.status
        except Exception as exc:  # what must not happen: a 500 in the HTTP API
            return "raised", exc

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.fixture
def settings(redis_server, sample_data_dir, tmp_path):
    return load_settings({"redis_url": redis_server.url, "data_dir": str(sample_data_dir),
                          "models_dir": str(tmp_path / "models"), "stop_grace_seconds": 30})


def training(settings, connection, **body) -> str:
    request = {"strategy_yaml": strategy_text("v3_minimal"), **DATES, **body}
    return producer.submit_training(connection, settings, request, check_data=False)["session_id"]


def run_as_started(connection, session_id: str) -> None:
    """What a worker's start leaves in the job hash (no worker runs here)."""
    connection.lrem("rq:queue:training", 0, session_id)
    connection.hset(f"rq:job:{session_id}", "status", JobStatus.STARTED.value)


def test_concurrent_starts_with_one_id_give_one_202(redis_server, redis_conn, sample_data_dir, tmp_path):
    web, url = start_web(redis_server.url, tmp_path, data_dir=str(sample_data_dir), models_dir=str(tmp_path / "m"))
    try:
        body = {"task_id": "one-id", "strategy_yaml": strategy_text("v3_minimal"), **DATES}
        barrier = threading.Barrier(CALLERS)

        def start():
            barrier.wait()
            return requests.post(f"{url}/training/start", json=body, timeout=60).status_code

        with ThreadPoolExecutor(max_workers=CALLERS) as pool:
            codes = Counter(pool.map(lambda _: start(), range(CALLERS)))
        assert codes == {202: 1, 409: CALLERS - 1}, codes
        assert redis_conn.lrange("rq:queue:training", 0, -1) == [b"one-id"]
    finally:
        stop_process(web)


def test_concurrent_producer_submissions_with_one_id_enqueue_it_once(settings, redis_conn):
    outcomes = together([lambda: training(settings, redis_conn, task_id="same")] * CALLERS)
    assert Counter(kind if kind != "refused" else value for kind, value in outcomes) == {"ok": 1, 409: CALLERS - 1}
    assert redis_conn.llen("rq:queue:training") == 1


def test_concurrent_stops_of_a_queued_session_cancel_it_once(settings, redis_conn):
    session_id = training(settings, redis_conn)
    outcomes = together([lambda: producer.request_stop(redis_conn, settings, session_id)] * 20)
    assert [value["status"] for kind, value in outcomes if kind == "ok"] == ["cancelled"]
    assert Counter(value for kind, value in outcomes if kind != "ok") == {409: 19}, outcomes
    assert producer.get_session(redis_conn, session_id)["status"] == "cancelled"


def test_concurrent_and_repeated_stops_of_a_running_session_keep_the_first_deadline(settings, redis_conn):
    session_id = training(settings, redis_conn)
    run_as_started(redis_conn, session_id)
    outcomes = together([lambda: producer.request_stop(redis_conn, settings, session_id)] * 20)
    accepted = [value for kind, value in outcomes if kind == "ok"]
    assert [value["status"] for value in accepted] == ["stopping"]
    assert Counter(value for kind, value in outcomes if kind != "ok") == {409: 19}, outcomes
    deadline = json.loads(redis_conn.get(keys.stop_key(session_id)))["hard_stop_at"]
    with pytest.raises(producer.RequestError) as again:
        producer.request_stop(redis_conn, settings, session_id)  # later: does not postpone the hard kill
    assert again.value.status == 409 and again.value.details["hard_stop_at"] == accepted[0]["hard_stop_at"]
    assert json.loads(redis_conn.get(keys.stop_key(session_id)))["hard_stop_at"] == deadline


def test_deletes_racing_each_other_and_stops_answer_404_or_409_never_an_error(settings, redis_conn):
    session_id = training(settings, redis_conn)
    producer.request_stop(redis_conn, settings, session_id)  # cancelled: an ended session
    calls = [lambda: producer.delete_session(redis_conn, session_id, settings)] * 10
    calls += [lambda: producer.request_stop(redis_conn, settings, session_id)] * 10
    outcomes = together(calls)
    assert not [o for o in outcomes if o[0] == "raised"], outcomes
    deletes, stops = outcomes[:10], outcomes[10:]
    assert [kind for kind, _ in deletes].count("ok") == 1
    assert {value for kind, value in deletes if kind == "refused"} <= {404}
    assert {value for _, value in stops} <= {404, 409}
    assert not redis_conn.exists(f"rq:job:{session_id}", keys.stop_key(session_id), keys.history_key(session_id))


def test_deletes_racing_the_stop_of_a_queued_session(settings, redis_conn):
    session_id = training(settings, redis_conn)
    calls = [lambda: producer.request_stop(redis_conn, settings, session_id)] * 10
    calls += [lambda: producer.delete_session(redis_conn, session_id, settings)] * 10
    outcomes = together(calls)
    assert not [o for o in outcomes if o[0] == "raised"], outcomes
    stops, deletes = outcomes[:10], outcomes[10:]
    assert [value["status"] for kind, value in stops if kind == "ok"] == ["cancelled"]
    assert {value for kind, value in stops if kind == "refused"} <= {404, 409}
    assert {value for kind, value in deletes if kind == "refused"} <= {404, 409}
    assert [kind for kind, _ in deletes].count("ok") <= 1


def test_a_reused_id_trains_from_scratch(redis_server, redis_conn, start_worker, sample_data_dir, tmp_path):
    """A session that timed out leaves no checkpoint; the next session with its id (after DELETE)
    trains its own epochs from the first, not the earlier session's from where it stopped."""
    models = tmp_path / "models"
    start_worker(data_dir=str(sample_data_dir), models_dir=str(models))
    short = load_settings({"redis_url": redis_server.url, "data_dir": str(sample_data_dir), "models_dir": str(models),
                           "session_timeout_minutes": 0.1})
    request = {"task_id": "reused", "strategy_yaml": strategy_text("v3_multi_indicator"), **DATES}
    producer.submit_training(redis_conn, short, {**request, "epochs": 500, "batch_size": 16})
    wait_for(lambda: len(history(redis_conn, "reused")) >= 2, 60, "two epochs of the first session")
    wait_for(lambda: producer.get_session(redis_conn, "reused")["status"] == "failed", 60, "the timeout")
    assert not checkpoint_file(models, "reused").exists()  # an ended session keeps none
    producer.delete_session(redis_conn, "reused", short)
    normal = load_settings({"redis_url": redis_server.url, "data_dir": str(sample_data_dir), "models_dir": str(models)})
    producer.submit_training(redis_conn, normal, {**request, "epochs": 3, "seed": 7})
    done = wait_for(lambda: (s := producer.get_session(redis_conn, "reused"))["status"] in ("completed", "failed")
                    and s, 120, "the second session")
    assert done["status"] == "completed", done
    assert [h["epoch"] for h in history(redis_conn, "reused")] == [1, 2, 3]
    assert done["result"]["training_metrics"]["epochs_trained"] == 3


class StopInEpoch(SessionReporter):
    """A session's reporter whose run is stopped (as by a worker's death) early in epoch `epoch`."""

    def __init__(self, job, epoch: int):
        super().__init__(job)
        self.stop_in, self.at = epoch, 0

    def batch(self, progress) -> None:
        super().batch(progress)
        self.at = progress.epoch

    def should_stop(self) -> bool:
        return self.at >= self.stop_in


def test_a_resumed_session_history_holds_every_epoch_of_its_checkpoint(redis_conn, sample_data_dir, tmp_path):
    """A work horse killed after checkpointing epoch 3 but before its history write reached Redis:
    the attempt that resumes writes the checkpoint's epochs, so none is missing."""
    from trainhost.jobs.pipeline.session import train_strategy
    from trainhost.jobs.pipeline.strategy import parse_strategy

    job = Queue("training", connection=redis_conn, serializer=JSONSerializer).enqueue(
        "trainhost.jobs.training.run_training", {}, job_id="resumed", meta={"kind": "training"})
    checkpoint = tmp_path / "resumed.pt"
    strategy = parse_strategy(strategy_text("v3_minimal"), {**DATES, "epochs": 5})
    first = StopInEpoch(job, 4)
    train_strategy(strategy, sample_data_dir, tmp_path / "models", first, checkpoint_path=checkpoint)
    first.close()
    assert [h["epoch"] for h in history(redis_conn, "resumed")] == [1, 2, 3]
    redis_conn.rpop(keys.history_key("resumed"))  # epoch 3's write was lost with the horse
    second = SessionReporter(job)
    train_strategy(strategy, sample_data_dir, tmp_path / "models", second, checkpoint_path=checkpoint, resume=True)
    second.close()
    assert [h["epoch"] for h in history(redis_conn, "resumed")] == [1, 2, 3, 4, 5]
