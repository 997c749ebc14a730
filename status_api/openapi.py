"""GET /openapi.json: an OpenAPI 3.1 document built from the app's own routes and pydantic models.

Paths and methods come from the Flask url_map; request bodies are the models the endpoints validate
with (jobs/schemas.py), response bodies are status_api/responses.py. `SPECS` adds what a route
cannot say about itself: a summary, its models and the error statuses it answers with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from flask import Blueprint, current_app, jsonify
from pydantic import BaseModel
from werkzeug.routing import Rule

from trainhost.jobs.backtest_results import MAX_EQUITY_POINTS, MAX_TRADES_PAGE
from trainhost.jobs.schemas import (
    LIST_LIMIT_MAX,
    LIST_OFFSET_MAX,
    SESSION_ID_PATTERN,
    EvaluationRequest,
    ExperimentRequest,
    StopRequest,
    TrainingRequest,
)
from trainhost.jobs.sessions import STATUSES
from trainhost.status_api import responses as r

bp = Blueprint("openapi", __name__)
REF = "#/components/schemas/{model}"
UNDOCUMENTED_BLUEPRINTS = {"rq_dashboard"}  # a third-party UI, optional (see the rq_dashboard setting)
# Answers that name a new session, linked to the operations that take a session id.
LINK_SOURCES = {"training.start": "$response.body#/session_id", "training.evaluate": "$response.body#/session_id"}
ERRORS = {
    400: "malformed request (not JSON, nested too deeply, not an object, a bad id or parameter)",
    401: "missing or wrong bearer token (only when api_token is configured)",
    403: "sent from a web page of another origin (see allowed_origins)",
    404: "no such session",
    409: "conflict: a duplicate id, a session still running, one that already ended, or a stop already accepted",
    413: "request body larger than max_request_bytes",
    415: "the body is not sent as Content-Type: application/json",
    421: "the Host header names a host this server does not answer for (see allowed_hosts)",
    422: "invalid request; the message names the field",
    503: "Redis is unreachable",
    507: "Redis is out of memory: it refuses writes (reads still work)",
}
# Every route answers these, as JSON, before its view runs (status_api/guards.py).
GUARD_ERRORS = (403, 421)
BODY_ERRORS = (400, 413, 415, 422)


@dataclass(frozen=True)
class Spec:
    """What the OpenAPI document says about one endpoint beyond its path and methods."""

    summary: str
    ok: type[BaseModel] | str  # a JSON response model, or the media type of a page
    errors: tuple[int, ...] = (503,)
    body: type[BaseModel] | None = None
    query: tuple[dict[str, Any], ...] = ()
    status: int = 200
    mutating: bool = False
    error_models: tuple[type[BaseModel], ...] = (r.ErrorResponse,)


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


SPECS: dict[str, Spec] = {
    "dashboard.index": Spec("Dashboard: sessions, GPUs, workers and queue depths (live)", "text/html", ()),
    "dashboard.session_page": Spec("A session's page: progress, curves, metrics, result, Stop",
                                   "text/html", (400, 404, 503)),
    "dashboard.experiment_page": Spec("An experiment's page: progress, the sortable comparison table, objective "
                                      "against each parameter, the stitched equity per trial, Stop",
                                      "text/html", (400, 404, 503)),
    "metrics.metrics": Spec("Prometheus metrics (text exposition format)", "text/plain", ()),
    "openapi.document": Spec("This OpenAPI document", r.Document, ()),
    "health.health": Spec("Liveness: is Redis reachable, is a worker busy", r.Health,
                          error_models=(r.Health, r.ErrorResponse)),
    "health.health_detailed": Spec("System, GPUs, Redis, workers and queue depths", r.HealthDetailed,
                                   error_models=(r.HealthDetailed,)),
    "training.start": Spec("Submit a training session", r.Submitted, (400, 409, 413, 422, 503),
                           body=TrainingRequest, status=202, mutating=True),
    "training.evaluate": Spec("Submit an evaluation of a trained model", r.Submitted, (400, 409, 413, 422, 503),
                              body=EvaluationRequest, status=202, mutating=True),
    "training.stop": Spec("Stop a session: queued → cancelled; running → stops after its current batch",
                          r.StopAnswer, (400, 404, 409, 413, 422, 503), body=StopRequest, mutating=True),
    "training.status": Spec("A session: status, phase, progress, metrics, device, error, result",
                            r.Session, (400, 404, 503)),
    "training.result": Spec("The result of a completed or stopped session", r.Result, (400, 404, 409, 503)),
    "training.sessions": Spec("Sessions, newest first", r.SessionList, (400, 422, 503), query=(
        _query("status", {"type": "string", "enum": list(STATUSES)}, "only sessions with this status"),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX, "default": 50}, "page size"),
        _query("offset", {"type": "integer", "minimum": 0, "maximum": LIST_OFFSET_MAX, "default": 0},
               "sessions to skip"),
    )),
    "training.result_trades": Spec("The round trips of a session's backtest, a page at a time", r.Trades,
                                   (400, 404, 409, 422, 503), query=(
        _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_TRADES_PAGE, "default": 100}, "page size"),
        _query("offset", {"type": "integer", "minimum": 0, "maximum": LIST_OFFSET_MAX, "default": 0},
               "trades to skip"),
    )),
    "training.result_equity": Spec("A session's backtest equity curve beside buy-and-hold, downsampled",
                                   r.EquityCurve, (400, 404, 409, 422, 503), query=(
        _query("points", {"type": "integer", "minimum": 2, "maximum": MAX_EQUITY_POINTS, "default": 1000},
               "at most this many points, evenly spaced, the first and last included"),
    )),
    "training.session_history": Spec("Per-epoch history of a training session", r.History, (400, 404, 503)),
    "experiments.submit": Spec("Submit an experiment: a sweep, a walk-forward, or both, as many sessions",
                               r.ExperimentSubmitted, (400, 409, 413, 422, 503), body=ExperimentRequest, status=202,
                               mutating=True),
    "experiments.listing": Spec("Experiments, newest first", r.ExperimentList, (400, 422, 503), query=(
        _query("limit", {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX, "default": 50}, "page size"),
        _query("offset", {"type": "integer", "minimum": 0, "maximum": LIST_OFFSET_MAX, "default": 0},
               "experiments to skip"),
    )),
    "experiments.detail": Spec("An experiment: status, children done/total, ETA, rows, best trial", r.Experiment,
                               (400, 404, 503)),
    "experiments.stop": Spec("Stop an experiment: queued children cancelled, running ones stopped",
                             r.ExperimentStopAnswer, (400, 404, 503), mutating=True),
    "experiments.delete": Spec("Remove an ended experiment's records (its sessions and folder stay)",
                               r.ExperimentDeleted, (400, 404, 409, 503), mutating=True),
    "experiments.equity": Spec("A walk-forward trial's stitched out-of-sample equity curve, downsampled",
                               r.ExperimentCurve, (400, 404, 422, 503), query=(
        _query("trial", {"type": "integer", "minimum": 0, "default": 0}, "the trial"),
        _query("points", {"type": "integer", "minimum": 2, "maximum": MAX_EQUITY_POINTS, "default": 1000},
               "at most this many points, evenly spaced, the first and last included"),
    )),
    "training.delete": Spec("Remove a finished session's Redis records (model files stay)", r.Deleted,
                            (400, 404, 409, 503), mutating=True),
}


def openapi_path(rule: Rule) -> str:
    """`/training/status/<session_id>` → `/training/status/{session_id}`."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)


def documented_rules() -> list[Rule]:
    return [rule for rule in current_app.url_map.iter_rules()
            if rule.endpoint != "static" and rule.endpoint.partition(".")[0] not in UNDOCUMENTED_BLUEPRINTS]


def _content(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": REF.format(model=model.__name__)}


def _responses(spec: Spec) -> dict[str, Any]:
    errors = set(spec.errors) | ({401, 507} if spec.mutating else set()) | (set(BODY_ERRORS) if spec.body else set())
    guards = {str(code): {"description": ERRORS[code], "content": _content("application/json", _ref(r.ErrorResponse))}
              for code in GUARD_ERRORS}
    if isinstance(spec.ok, str):
        page = _content(spec.ok, {"type": "string"})
        answers = {str(spec.status): {"description": "the page", "content": page}}
        answers |= {str(code): {"description": ERRORS[code], "content": page} for code in errors}
        return dict(sorted((answers | guards).items()))
    models = [_ref(model) for model in spec.error_models]
    error_schema = models[0] if len(models) == 1 else {"anyOf": models}
    answers = {str(spec.status): {"description": spec.summary, "content": _content("application/json", _ref(spec.ok))}}
    answers |= {str(code): {"description": ERRORS[code], "content": _content("application/json", error_schema)}
                for code in errors}
    return dict(sorted((answers | guards).items()))


def _operation(rule: Rule, spec: Spec) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": rule.endpoint.replace(".", "_"), "summary": spec.summary,
                                 "tags": [rule.endpoint.partition(".")[0]], "responses": _responses(spec)}
    parameters = [{"name": name, "in": "path", "required": True,
                   "schema": {"type": "string", "pattern": SESSION_ID_PATTERN}} for name in sorted(rule.arguments)]
    parameters += spec.query
    if parameters:
        operation["parameters"] = parameters
    if spec.body is not None:
        operation["requestBody"] = {"required": True, "content": _content("application/json", _ref(spec.body))}
    if spec.mutating:
        operation["security"] = [{}, {"bearerAuth": []}]  # the token is needed only when api_token is set
    return operation


def _schemas() -> dict[str, Any]:
    models = {TrainingRequest, EvaluationRequest, StopRequest, ExperimentRequest}
    models |= {spec.ok for spec in SPECS.values() if not isinstance(spec.ok, str)}
    models |= {model for spec in SPECS.values() for model in spec.error_models}
    schemas: dict[str, Any] = {}
    for model in sorted(models, key=lambda m: m.__name__):
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


@cache
def _version() -> str:
    try:
        return version("trainhost")
    except PackageNotFoundError:  # run from a source tree without installing
        return "0.0.0"


def _add_links(operations: dict[str, dict[str, Any]], targets: list[str]) -> None:
    for endpoint, expression in LINK_SOURCES.items():
        answer = next(iter(operations[endpoint]["responses"].values()))  # the success answer comes first
        answer["links"] = {f"to_{target}": {"operationId": target, "parameters": {"session_id": expression}}
                           for target in targets}


def build_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    operations: dict[str, dict[str, Any]] = {}
    for rule in documented_rules():
        spec = SPECS.get(rule.endpoint)
        if spec is None:
            continue  # tests/unit/test_openapi.py fails on any route without a spec
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            operation = operations[rule.endpoint] = _operation(rule, spec)
            paths.setdefault(openapi_path(rule), {})[method.lower()] = operation
    _add_links(operations, sorted(op["operationId"] for op in operations.values()
                                  if any(p["name"] == "session_id" for p in op.get("parameters", ()))))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Training host", "version": _version(),
                 "description": "Training and evaluation sessions on a Redis (RQ) job queue: submit, follow, "
                                "stop, fetch results. Errors are {\"error\": {code, message, details}}."},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": _schemas(),
                       "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                                          "description": "the api_token setting"}}},
    }


@bp.get("/openapi.json")
def document():
    return jsonify(build_document())
