"""GET /openapi.json: a valid OpenAPI 3.1 document describing every route, built from the pydantic
models the endpoints validate with, whose response schemas accept what the API really answers."""

from __future__ import annotations

import json

import fakeredis
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from rq.job import Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from tests.helpers.fixtures import strategy_text
from trainhost.config import load_settings
from trainhost.jobs import keys, producer
from trainhost.jobs.schemas import EvaluationRequest, StopRequest, TrainingRequest
from trainhost.status_api import create_app
from trainhost.status_api.openapi import REF, openapi_path

EPOCH = {"epoch": 1, "train_loss": 0.9, "train_accuracy": 0.5, "val_loss": 0.8, "val_accuracy": 0.4,
         "learning_rate": 0.001, "duration_s": 1.5, "samples_per_second": 2000.0,
         "timestamp": "2024-01-01T00:00:00+00:00"}


@pytest.fixture
def app():
    return create_app({"REDIS_CLIENT": fakeredis.FakeRedis()})


@pytest.fixture
def document(app):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_is_a_valid_openapi_3_1_document(document):
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_every_route_is_described(app, document):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        operations = document["paths"].get(openapi_path(rule), {})
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in operations, f"{method} {rule.rule} ({rule.endpoint}) is not in the document"


def test_request_bodies_are_the_models_the_endpoints_validate_with(document):
    schemas = document["components"]["schemas"]
    for model in (TrainingRequest, EvaluationRequest, StopRequest):
        schema = model.model_json_schema(ref_template=REF)
        for name, nested in schema.pop("$defs", {}).items():  # nested models are components of their own
            assert schemas[name] == nested
        assert schemas[model.__name__] == schema
    for path, model in (("/training/start", TrainingRequest), ("/training/evaluate", EvaluationRequest),
                        ("/training/stop", StopRequest)):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": REF.format(model=model.__name__)}


def test_mutating_operations_document_the_token(document):
    for path, method in (("/training/start", "post"), ("/training/evaluate", "post"), ("/training/stop", "post"),
                         ("/training/sessions/{session_id}", "delete")):
        operation = document["paths"][path][method]
        assert "401" in operation["responses"]
        assert {"bearerAuth": []} in operation["security"]


def test_the_rq_dashboard_mount_is_left_out():
    app = create_app({"REDIS_CLIENT": fakeredis.FakeRedis(), "rq_dashboard": True})
    paths = app.test_client().get("/openapi.json").get_json()["paths"]
    assert any(rule.rule.startswith("/rq") for rule in app.url_map.iter_rules())
    assert not any(path.startswith("/rq") for path in paths)


def seeded_client(connection):
    """A queued session, a running one with history, a completed one with a result."""
    settings = load_settings()

    def submit() -> Job:
        request = {"strategy_yaml": strategy_text("v3_multi_indicator"), "epochs": 5}
        session_id = producer.submit_training(connection, settings, request, check_data=False)["session_id"]
        return Job.fetch(session_id, connection=connection, serializer=JSONSerializer)

    queued, running, completed = submit(), submit(), submit()
    running.set_status(JobStatus.STARTED)
    running.meta.update(progress={"percent": 20.0, "epoch": 1, "total_epochs": 5, "batch": 3, "total_batches": 10,
                                  "samples_seen": 96, "message": "training", "eta_seconds": 12.5},
                        metrics={"current": {k: EPOCH[k] for k in ("train_loss", "val_loss", "learning_rate")},
                                 "best": {"val_loss": 0.8}},
                        throughput={"samples_per_second": 2000.0}, device={"type": "cpu", "name": "x86_64"})
    running.save_meta()
    connection.rpush(keys.history_key(running.id), json.dumps(EPOCH))
    completed.set_status(JobStatus.FINISHED)
    Result.create(completed, Result.Type.SUCCESSFUL, ttl=600, return_value={"model_path": "models/x/1h_v1"})
    return queued.id, running.id, completed.id


def test_real_answers_match_the_documented_response_schemas(app, document):
    connection = app.config["REDIS_CLIENT"]
    queued, running, completed = seeded_client(connection)
    client = app.test_client()
    calls = [("get", "/health", None), ("get", "/health/detailed", None), ("get", "/training/sessions", None),
             ("get", f"/training/status/{queued}", None), ("get", f"/training/status/{running}", None),
             ("get", f"/training/status/{completed}", None), ("get", f"/training/result/{completed}", None),
             ("get", f"/training/result/{running}", None), ("get", f"/training/sessions/{running}/history", None),
             ("get", "/training/status/nope", None), ("get", "/training/sessions?limit=0", None),
             ("post", "/training/stop", {"session_id": queued}), ("post", "/training/stop", {"session_id": running}),
             ("post", "/training/start", {"strategy_yaml": "name: x"}), ("post", "/training/start", [1]),
             ("delete", f"/training/sessions/{queued}", None), ("get", "/openapi.json", None)]
    templates = {path.replace("{session_id}", "ID"): path for path in document["paths"]}
    for method, url, body in calls:
        response = getattr(client, method)(url, json=body)
        path = url.split("?")[0]
        for session_id in (queued, running, completed, "nope"):
            path = path.replace(session_id, "ID")
        answers = document["paths"][templates[path]][method]["responses"]
        assert str(response.status_code) in answers, f"{method} {url}: {response.status_code} is not documented"
        schema = answers[str(response.status_code)]["content"]["application/json"]["schema"]
        OAS31Validator({**schema, "components": document["components"]}).validate(response.get_json())
