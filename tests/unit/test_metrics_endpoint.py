"""GET /metrics: the Prometheus exposition, parsed with prometheus_client's own parser (fakeredis)."""

from __future__ import annotations

import json

import fakeredis
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers.fixtures import strategy_text
from trainhost.config import load_settings
from trainhost.jobs import keys, producer
from trainhost.status_api import create_app

FAKE_GPU = {"available": True, "devices": [{"index": 0, "name": "Fake H100", "memory_used_mb": 1024,
                                            "memory_total_mb": 81920, "utilization_percent": 55,
                                            "temperature_c": 61}]}


def submit(connection) -> Job:
    request = {"strategy_yaml": strategy_text("v3_multi_indicator"), "epochs": 5}
    session_id = producer.submit_training(connection, load_settings(), request, check_data=False)["session_id"]
    return Job.fetch(session_id, connection=connection, serializer=JSONSerializer)


@pytest.fixture
def connection(monkeypatch):
    """Redis with a queued, a running (mid-epoch, with history) and a cancelled session, a busy
    worker and an idle one. Gives (connection, the running session's id)."""
    monkeypatch.setattr("trainhost.status_api.metrics.gpu_summary", lambda: FAKE_GPU)
    connection = fakeredis.FakeRedis()
    submit(connection)
    running = submit(connection)
    queue = Queue("training", connection=connection, serializer=JSONSerializer)
    queue.remove(running)
    running.set_status(JobStatus.STARTED)
    running.meta.update(progress={"percent": 40.0, "epoch": 3, "total_epochs": 5},
                        throughput={"samples_per_second": 1234.5})
    running.save_meta()
    for epoch, duration in ((1, 2.0), (2, 2.5)):
        connection.rpush(keys.history_key(running.id), json.dumps({"epoch": epoch, "duration_s": duration}))
    producer.request_stop(connection, load_settings(), submit(connection).id)
    for name, state in (("gpu0", "busy"), ("gpu1", "idle")):
        worker = Worker([queue], connection=connection, name=name, serializer=JSONSerializer)
        worker.register_birth()
        worker.set_state(state)
    return connection, running.id


def scrape(app) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}}, checking the content type on the way."""
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        assert family.name.startswith("trainhost_") and family.documentation
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_sessions_queues_workers_training_and_gpus(connection):
    connection, running_id = connection
    samples = scrape(create_app({"REDIS_CLIENT": connection}))
    assert samples["trainhost_redis_up"] == {(): 1}
    sessions = {dict(labels)["status"]: value for labels, value in samples["trainhost_sessions"].items()}
    assert sessions == {"queued": 1, "running": 1, "completed": 0, "failed": 0, "stopped": 0, "cancelled": 1}
    assert samples["trainhost_queue_depth"] == {(("queue", "high"),): 0, (("queue", "training"),): 1,
                                                (("queue", "evaluation"),): 0}
    assert samples["trainhost_workers"] == {(("state", "busy"),): 1, (("state", "idle"),): 1}
    assert samples["trainhost_worker_jobs_total"][(("outcome", "successful"), ("worker", "gpu0"))] == 0
    running = (("session_id", running_id), ("strategy", "v3_multi_indicator_example"))
    assert samples["trainhost_training_samples_per_second"] == {running: 1234.5}
    assert samples["trainhost_training_epoch_duration_seconds"] == {running: 2.5}  # the last epoch
    assert samples["trainhost_training_progress_ratio"] == {running: 0.4}
    gpu = (("gpu", "0"), ("name", "Fake H100"))
    assert samples["trainhost_gpu_memory_used_bytes"] == {gpu: 1024 * 2**20}
    assert samples["trainhost_gpu_memory_total_bytes"] == {gpu: 81920 * 2**20}
    assert samples["trainhost_gpu_utilization_ratio"] == {gpu: 0.55}
    assert samples["trainhost_gpu_temperature_celsius"] == {gpu: 61}


def test_names_follow_prometheus_conventions(connection):
    response = create_app({"REDIS_CLIENT": connection[0]}).test_client().get("/metrics")
    families = list(text_string_to_metric_families(response.get_data(as_text=True)))
    for family in families:
        assert family.name == family.name.lower() and "__" not in family.name
        for sample in family.samples:
            assert sample.name.endswith("_total") == (family.type == "counter"), sample.name
            assert not sample.name.endswith(("_mb", "_percent", "_ms")), "base units: bytes, ratios, seconds"


def test_redis_down_is_a_metric_not_an_error(monkeypatch):
    monkeypatch.setattr("trainhost.status_api.metrics.gpu_summary", lambda: FAKE_GPU)
    samples = scrape(create_app({"redis_url": "redis://127.0.0.1:1/0"}))
    assert samples["trainhost_redis_up"] == {(): 0}
    assert "trainhost_sessions" not in samples
    assert "trainhost_gpu_memory_used_bytes" in samples  # the rest is still exported
