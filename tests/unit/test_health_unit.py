"""Health payload shape and JSON errors, with fakeredis."""

import fakeredis
import pytest

from trainhost.config import ConfigError
from trainhost.status_api import create_app


@pytest.fixture
def client():
    return create_app({"REDIS_CLIENT": fakeredis.FakeRedis()}).test_client()


def test_health_shape(client):
    body = client.get("/health").get_json()
    assert set(body) >= {"healthy", "service", "status", "worker_status", "current_session"}
    assert body["healthy"] is True
    assert body["worker_status"] == "idle"


def test_health_detailed_shape(client):
    response = client.get("/health/detailed")
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) >= {"system", "gpu", "redis", "workers", "queues"}
    assert set(body["system"]) >= {"cpu_percent", "memory", "disk"}
    assert body["gpu"]["available"] in (True, False)  # "no GPU" is a normal answer
    assert body["redis"]["ok"] is True
    assert set(body["queues"]) == {"high", "training", "evaluation"}


def test_unknown_route_is_json_404(client):
    response = client.get("/no/such/thing")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_redis_unreachable_is_503_json():
    app = create_app({"redis_url": "redis://127.0.0.1:1/0"})
    response = app.test_client().get("/health")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "redis_unavailable"
    detailed = app.test_client().get("/health/detailed")
    assert detailed.status_code == 503
    assert "system" in detailed.get_json()


def test_non_loopback_without_token_is_refused():
    with pytest.raises(ConfigError, match="api_token"):
        create_app({"host": "0.0.0.0"})
    assert create_app({"host": "0.0.0.0", "api_token": "s3cret"}) is not None
