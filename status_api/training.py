"""The host-service HTTP API (paths of the old FastAPI service kept)."""

from __future__ import annotations

import re
from functools import wraps

from flask import Blueprint, jsonify, request

from trainhost.jobs import producer
from trainhost.jobs.producer import RequestError
from trainhost.jobs.schemas import SESSION_ID_PATTERN
from trainhost.jobs.sessions import history
from trainhost.status_api import services
from trainhost.status_api.errors import ApiError

bp = Blueprint("training", __name__, url_prefix="/training")


def require_token(view):
    """Mutating endpoints need `Authorization: Bearer <api_token>` when a token is configured."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if not services.token_matches(value.strip() if scheme.lower() == "bearer" else None):
            raise ApiError(401, "unauthorized", "this endpoint needs the header Authorization: Bearer <token>")
        return view(*args, **kwargs)

    return wrapper


def json_body() -> dict:
    body = request.get_json(silent=True, force=True)
    if body is None:
        raise ApiError(400, "invalid_json", "the request body must be valid UTF-8 JSON")
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    return body


def checked_id(session_id: str) -> str:
    if not re.fullmatch(SESSION_ID_PATTERN, session_id):
        raise ApiError(400, "invalid_session_id", "session_id: must match [A-Za-z0-9_-]{1,64}")
    return session_id


def _call(function, *args, **kwargs):
    try:
        return function(services.redis(), *args, **kwargs)
    except RequestError as exc:
        raise ApiError(exc.status, exc.code, exc.message, exc.details) from None


@bp.post("/start")
@require_token
def start():
    return jsonify(_call(producer.submit_training, services.settings(), json_body())), 202


@bp.post("/evaluate")
@require_token
def evaluate():
    return jsonify(_call(producer.submit_evaluation, services.settings(), json_body())), 202


@bp.post("/stop")
@require_token
def stop():
    return jsonify(_call(producer.request_stop, services.settings(), json_body()))


@bp.get("/status/<session_id>")
def status(session_id: str):
    return jsonify(_call(producer.get_session, checked_id(session_id)))


@bp.get("/result/<session_id>")
def result(session_id: str):
    return jsonify(_call(producer.get_result, checked_id(session_id)))


@bp.get("/sessions")
def sessions():
    try:
        limit = int(request.args.get("limit", 50))
        offset = int(request.args.get("offset", 0))
    except ValueError:
        raise ApiError(400, "invalid_request", "limit and offset must be integers") from None
    return jsonify(_call(producer.list_sessions, request.args.get("status"), limit, offset))


@bp.get("/sessions/<session_id>/history")
def session_history(session_id: str):
    session = _call(producer.get_session, checked_id(session_id))
    return jsonify({"session_id": session["session_id"], "history": history(services.redis(), session_id)})


@bp.delete("/sessions/<session_id>")
@require_token
def delete(session_id: str):
    return jsonify(_call(producer.delete_session, checked_id(session_id)))
