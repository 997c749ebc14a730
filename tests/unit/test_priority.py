"""Which queue a session goes to: its kind's, or the high-priority one; names from the settings.
(fakeredis; the HTTP layer is real Flask.)"""

from __future__ import annotations

import fakeredis
import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from tests.helpers.fixtures import strategy_text
from tests.unit.test_bad_input import DATES, write_model_folder
from trainhost.config import load_settings
from trainhost.jobs import producer
from trainhost.status_api import create_app

RENAMED = {"training_queue": "gpu-train", "evaluation_queue": "evals", "high_priority_queue": "urgent"}


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


@pytest.fixture
def folders(sample_data_dir, tmp_path):
    write_model_folder(tmp_path / "models" / "some_strategy" / "1h_v1", strategy_text("v3_multi_indicator"))
    return {"data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models")}


def queued(redis, name: str) -> list[str]:
    return Queue(name, connection=redis, serializer=JSONSerializer).job_ids


def training(**body) -> dict:
    return {"strategy_yaml": strategy_text("v3_multi_indicator"), **DATES, **body}


def test_each_kind_goes_to_its_queue_and_high_priority_to_the_high_queue(redis, folders):
    client = create_app({"REDIS_CLIENT": redis, **folders}).test_client()
    sent = {
        "normal": client.post("/training/start", json=training(task_id="normal")),
        "high": client.post("/training/start", json=training(task_id="high", priority="high")),
        "eval": client.post("/training/evaluate", json={"model_path": "some_strategy/1h_v1", "session_id": "eval"}),
        "eval-high": client.post("/training/evaluate", json={"model_path": "some_strategy/1h_v1",
                                                             "session_id": "eval-high", "priority": "high"}),
    }
    assert {name: response.status_code for name, response in sent.items()} == dict.fromkeys(sent, 202)
    assert queued(redis, "training") == ["normal"]
    assert queued(redis, "evaluation") == ["eval"]
    assert queued(redis, "high") == ["high", "eval-high"]


def test_renamed_queues_are_the_ones_enqueued_to(redis, folders):
    settings = load_settings({**folders, **RENAMED})
    producer.submit_training(redis, settings, training(task_id="normal"))
    producer.submit_training(redis, settings, training(task_id="high", priority="high"))
    producer.submit_evaluation(redis, settings, {"model_path": "some_strategy/1h_v1", "session_id": "eval"})
    assert (queued(redis, "gpu-train"), queued(redis, "urgent"), queued(redis, "evals")) == (["normal"], ["high"],
                                                                                             ["eval"])
    assert not redis.keys("rq:queue:training") and not redis.keys("rq:queue:high")
    assert settings.queues == ["urgent", "gpu-train", "evals"]  # what `trainhost worker` listens to, in order


def test_a_bad_priority_is_refused_naming_the_field_and_nothing_is_enqueued(redis, folders):
    settings = load_settings(folders)
    with pytest.raises(producer.RequestError) as refused:
        producer.submit_training(redis, settings, training(priority="urgent"))
    assert refused.value.status == 422 and refused.value.message.startswith("priority: ")
    assert not redis.keys("rq:*")
