"""The pieces of "each session once" that need no real Redis: when a worker counts as lost, whose
checkpoint may be resumed, fenced checkpoint and model-folder writes, one name rule for the
validator and the saver, and the refusals this adds to the HTTP API (fakeredis; real Flask).
The end-to-end faults are in tests/integration/test_faults.py and test_exactly_once.py."""

from __future__ import annotations

import json
import logging

import fakeredis
import numpy as np
import pytest
import torch
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from tests.helpers.fixtures import strategy_text
from trainhost.jobs.allowlist import allowed_functions
from trainhost.jobs.pipeline.artifacts import save_artifacts
from trainhost.jobs.pipeline.errors import PipelineError, StrategyError
from trainhost.jobs.pipeline.fencing import Superseded
from trainhost.jobs.pipeline.model import build_mlp
from trainhost.jobs.pipeline.names import folder_name_error
from trainhost.jobs.pipeline.strategy import parse_strategy
from trainhost.jobs.pipeline.trainer import train_model
from trainhost.jobs.pipeline.training_settings import TrainingConfig
from trainhost.status_api import create_app
from trainhost.worker.lost import LostWorkerWatch
from trainhost.worker.rq_worker import TrainhostWorker

DATES = {"start_date": "2017-05-01", "end_date": "2018-02-07"}


# -- when a worker counts as lost --------------------------------------------------------------------
def test_an_entry_unchanged_for_the_grace_is_lost_and_a_beat_restarts_the_count():
    watch = LostWorkerWatch(grace=15, max_gap=15)
    assert watch.observe({"a": 100.0, "b": 7.0}, now=0) == []
    assert watch.observe({"a": 100.0, "b": 8.0}, now=10) == []  # b beat
    assert watch.observe({"a": 100.0, "b": 8.0}, now=15) == [("a", 100.0)]
    assert watch.observe({"b": 8.0}, now=20) == []  # a is gone (requeued); b: 10 s unchanged


@pytest.mark.parametrize("blind", ["gap", "interrupted"])
def test_time_the_watcher_could_not_see_redis_does_not_count(blind):
    """A Redis outage or a full Redis stops the owner's heartbeats as well: it restarts the count."""
    watch = LostWorkerWatch(grace=15, max_gap=15)
    watch.observe({"a": 100.0}, now=0)
    watch.observe({"a": 100.0}, now=10)
    if blind == "interrupted":
        watch.interrupted()  # e.g. its own heartbeat was refused
        assert watch.observe({"a": 100.0}, now=14) == []
        assert watch.observe({"a": 100.0}, now=25) == []
        assert watch.observe({"a": 100.0}, now=29) == [("a", 100.0)]
    else:
        assert watch.observe({"a": 100.0}, now=40) == []  # the watcher itself was away (paused, cut off)
        assert watch.observe({"a": 100.0}, now=50) == []
        assert watch.observe({"a": 100.0}, now=55) == [("a", 100.0)]


def test_a_worker_whose_registration_vanished_registers_again():
    connection = fakeredis.FakeRedis()
    queue = Queue("training", connection=connection, serializer=JSONSerializer)
    worker = TrainhostWorker([queue], connection=connection, allowed=allowed_functions())
    worker.register_birth()
    connection.flushall()  # Redis restarted empty
    worker.watch_sessions()
    assert connection.sismember("rq:workers", worker.key)
    assert connection.hget(worker.key, "birth") is not None


def test_the_started_registry_entry_outlives_missed_heartbeats():
    """RQ's abandoned-job cleanup runs wherever the registry is counted (the health page): its
    entry must not expire before a worker has judged the session lost."""
    connection = fakeredis.FakeRedis()
    queue = Queue("training", connection=connection, serializer=JSONSerializer)
    worker = TrainhostWorker([queue], connection=connection, allowed=allowed_functions())
    job = queue.enqueue("trainhost.jobs.training.run_training", {})
    assert worker.get_heartbeat_ttl(job) >= 10 * worker.lost_watch.grace


# -- checkpoints ---------------------------------------------------------------------------------------
def planted(n: int = 600):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 6)).astype(np.float32)
    y = (X @ rng.standard_normal((6, 3))).argmax(axis=1)
    return X[:400], y[:400], X[400:], y[400:]


def model(hidden=(16,)):
    torch.manual_seed(0)
    return build_mlp(6, list(hidden), dropout=0.0)


def config(epochs: int) -> TrainingConfig:
    return TrainingConfig(epochs=epochs, batch_size=64)


def train(*args, **options):
    """train_model on the CPU, whatever the machine has."""
    return train_model(*args, device="cpu", **options)


OWNER = {"request": "submission-a", "attempt": 2}


@pytest.mark.parametrize("earlier", ["another submission", "another architecture"])
def test_a_checkpoint_of_another_submission_is_discarded_and_training_starts_from_scratch(
        tmp_path, caplog, earlier):
    X, y, Xv, yv = planted()
    checkpoint = tmp_path / "s.pt"
    first = model((32, 8) if earlier == "another architecture" else (16,))
    train(first, X, y, Xv, yv, config(2), checkpoint_path=checkpoint,
                checkpoint_owner={"request": "submission-old", "attempt": 1})
    resumed_from = []
    with caplog.at_level(logging.WARNING, logger="trainhost.trainer"):
        result = train(model(), X, y, Xv, yv, config(3), checkpoint_path=checkpoint, resume=True,
                             checkpoint_owner=OWNER, on_resume=resumed_from.append)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert resumed_from == [[]]
    assert "another submission" in caplog.text
    assert torch.load(checkpoint, weights_only=True)["owner"] == OWNER  # now this submission's


def test_a_checkpoint_of_the_same_submission_resumes_and_reports_its_history(tmp_path):
    X, y, Xv, yv = planted()
    checkpoint = tmp_path / "s.pt"
    train(model(), X, y, Xv, yv, config(2), checkpoint_path=checkpoint,
                checkpoint_owner={**OWNER, "attempt": 1})
    resumed_from = []
    result = train(model(), X, y, Xv, yv, config(3), checkpoint_path=checkpoint, resume=True,
                         checkpoint_owner=OWNER, on_resume=resumed_from.append)
    assert [r["epoch"] for r in resumed_from[0]] == [1, 2]
    assert [r["epoch"] for r in result.history] == [1, 2, 3]


def test_a_superseded_attempt_writes_no_checkpoint(tmp_path):
    X, y, Xv, yv = planted()
    checkpoint = tmp_path / "s.pt"
    train(model(), X, y, Xv, yv, config(1), checkpoint_path=checkpoint, checkpoint_owner=OWNER)
    before = checkpoint.read_bytes()

    def superseded() -> bool:
        raise Superseded("a newer attempt runs")

    with pytest.raises(Superseded):
        train(model(), X, y, Xv, yv, config(3), checkpoint_path=checkpoint, resume=True,
                    checkpoint_owner=OWNER, checkpoint_guard=superseded)
    assert checkpoint.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.pt"]  # no temporary left either
    train(model(), X, y, Xv, yv, config(2), checkpoint_path=checkpoint, resume=True,
                checkpoint_owner=OWNER, checkpoint_guard=lambda: False)  # cannot tell: skipped, not fatal
    assert checkpoint.read_bytes() == before


@pytest.mark.parametrize("refused", ["claim", "complete"])
def test_a_model_folder_refused_by_the_fence_is_not_left_behind(tmp_path, refused):
    def fence(stage, path):
        if stage == refused:
            raise Superseded("a newer attempt runs")

    with pytest.raises(Superseded):
        save_artifacts(tmp_path, "s", "1h", state_dict=model().state_dict(), metadata={}, history=[], fence=fence)
    assert not list(tmp_path.glob("s/1h_v*"))


# -- one name rule ---------------------------------------------------------------------------------
NAMES = ["ok", "a.b", "a-b_c", "a..b", "..", ".hidden", "a/b", "", "x" * 100, "x" * 101, "a..", "_x"]


@pytest.mark.parametrize("name", NAMES)
def test_the_validator_accepts_exactly_the_names_the_saver_can_save(tmp_path, name):
    text = strategy_text("v3_minimal")
    original = parse_strategy(text).name
    try:
        parse_strategy(text.replace(f"name: {original}", f"name: {json.dumps(name)}", 1))
        accepted = True
    except StrategyError as exc:
        accepted = False
        assert any(error.startswith("name") for error in exc.errors), exc.errors
    try:
        save_artifacts(tmp_path, name, "1h", state_dict={}, metadata={}, history=[])
        saved = True
    except PipelineError:
        saved = False
    assert accepted == saved == (folder_name_error(name) is None)


# -- the refusals this adds to the HTTP API (beside tests/unit/test_bad_input.py) ---------------------
@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


@pytest.fixture
def client(redis, sample_data_dir, tmp_path):
    return create_app({"REDIS_CLIENT": redis, "data_dir": str(sample_data_dir),
                       "models_dir": str(tmp_path / "models")}).test_client()


def post(client, path: str, body: dict):
    return client.post(path, data=json.dumps(body), content_type="application/json")


def test_a_strategy_name_with_two_dots_is_refused_at_submission(client, redis):
    text = strategy_text("v3_multi_indicator")
    body = {"strategy_yaml": text.replace(f"name: {parse_strategy(text).name}", "name: a..b", 1), **DATES}
    response = post(client, "/training/start", body)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "invalid_strategy"
    assert "name" in json.dumps(response.get_json()["error"]) and "'..'" in response.get_json()["error"]["message"]
    assert not redis.keys("rq:job:*") and not redis.keys("rq:queue:*"), "something was enqueued"


def started_session(client, redis) -> str:
    response = post(client, "/training/start", {"strategy_yaml": strategy_text("v3_multi_indicator"), **DATES})
    assert response.status_code == 202, response.get_data(as_text=True)
    session_id = response.get_json()["session_id"]
    redis.lrem("rq:queue:training", 0, session_id)
    redis.hset(f"rq:job:{session_id}", "status", JobStatus.STARTED.value)  # as a worker's start leaves it
    return session_id


def test_a_second_stop_is_refused_and_keeps_the_first_deadline(client, redis):
    session_id = started_session(client, redis)
    first = post(client, "/training/stop", {"session_id": session_id})
    assert first.status_code == 200 and first.get_json()["status"] == "stopping"
    again = post(client, "/training/stop", {"session_id": session_id})
    assert again.status_code == 409, again.get_data(as_text=True)
    assert "already being stopped" in again.get_json()["error"]["message"]
    assert first.get_json()["hard_stop_at"] in again.get_json()["error"]["message"]


def test_stopping_an_ended_session_and_deleting_twice_are_refused(client, redis):
    response = post(client, "/training/start", {"strategy_yaml": strategy_text("v3_multi_indicator"), **DATES})
    session_id = response.get_json()["session_id"]
    assert post(client, "/training/stop", {"session_id": session_id}).get_json()["status"] == "cancelled"
    ended = post(client, "/training/stop", {"session_id": session_id})
    assert ended.status_code == 409 and "already ended (cancelled)" in ended.get_json()["error"]["message"]
    assert client.delete(f"/training/sessions/{session_id}").status_code == 200
    assert client.delete(f"/training/sessions/{session_id}").status_code == 404
    assert post(client, "/training/stop", {"session_id": session_id}).status_code == 404
