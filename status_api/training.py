"""The host-service HTTP API (paths of the old FastAPI service kept)."""

from __future__ import annotations

import json
import re
from functools import wraps
from typing import Any

from flask import Blueprint, jsonify, request

from trainhost.jobs import backtest_results, producer
from trainhost.jobs.backtest_results import MAX_EQUITY_POINTS, MAX_TRADES_PAGE
from trainhost.jobs.producer import RequestError
from trainhost.jobs.schemas import LIST_LIMIT_MAX, LIST_OFFSET_MAX, SESSION_ID_PATTERN
from trainhost.jobs.sessions import history
from trainhost.status_api import services

bp = Blueprint("training", __name__, url_prefix="/training")
JSON_TYPE = "application/json"
MAX_JSON_DEPTH = 50  # as deep as a strategy's YAML may nest (jobs/pipeline/strategy.py)
_TOO_DEEP = object()


def require_token(view):
    """Mutating endpoints need `Authorization: Bearer <api_token>` when a token is configured."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if not services.token_matches(value.strip() if scheme.lower() == "bearer" else None):
            raise RequestError(401, "unauthorized", "this endpoint needs the header Authorization: Bearer <token>")
        return view(*args, **kwargs)

    return wrapper


def json_body() -> dict:
    """The request's JSON object. Only `Content-Type: application/json` is read: a page on another
    site can send text/plain or form bodies without asking, but not this type (see guards.py)."""
    if request.mimetype != JSON_TYPE:
        given = request.mimetype or "none"
        raise RequestError(415, "unsupported_media_type",
                           f"the request body must be JSON sent with Content-Type: {JSON_TYPE} (got {given})")
    try:
        body = json.loads(request.get_data(cache=True).decode("utf-8"))
    except RecursionError:
        body = _TOO_DEEP
    except (UnicodeDecodeError, ValueError):
        raise RequestError(400, "invalid_json", "the request body must be valid UTF-8 JSON") from None
    if body is _TOO_DEEP or nesting_exceeds(body, MAX_JSON_DEPTH):
        # Deeper documents would only exhaust the recursion of what reads them after the parser.
        raise RequestError(400, "invalid_json", f"the request body's JSON is nested more than {MAX_JSON_DEPTH} "
                                                "levels deep")
    if not isinstance(body, dict):
        raise RequestError(400, "invalid_json", "the request body must be a JSON object")
    return body


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether arrays and objects in `value` nest more than `limit` levels (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def checked_id(session_id: str) -> str:
    if not re.fullmatch(SESSION_ID_PATTERN, session_id):
        raise RequestError(400, "invalid_session_id", "session_id: must match [A-Za-z0-9_-]{1,64}")
    return session_id


def _call(function, *args, **kwargs):
    return function(services.redis(), *args, **kwargs)


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


@bp.get("/result/<session_id>/trades")
def result_trades(session_id: str):
    limit = int_arg("limit", 100, 1, MAX_TRADES_PAGE)
    offset = int_arg("offset", 0, 0, LIST_OFFSET_MAX)
    rows = _call(backtest_results.session_backtest_rows, services.settings(), checked_id(session_id),
                 backtest_results.TRADES_FILE)
    return jsonify({"session_id": session_id, **backtest_results.trades_page(rows, limit, offset)})


@bp.get("/result/<session_id>/equity")
def result_equity(session_id: str):
    points = int_arg("points", 1000, 2, MAX_EQUITY_POINTS)
    rows = _call(backtest_results.session_backtest_rows, services.settings(), checked_id(session_id),
                 backtest_results.EQUITY_FILE)
    return jsonify({"session_id": session_id, **backtest_results.equity_points(rows, points)})


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """A bounded integer query parameter (Redis takes 64-bit offsets only: bounds keep them inside)."""
    try:
        value = int(request.args.get(name, default))
    except ValueError:
        raise RequestError(400, "invalid_request", f"{name}: must be an integer") from None
    if not low <= value <= high:
        raise RequestError(422, "invalid_request", f"{name}: must be an integer from {low} to {high}")
    return value


@bp.get("/sessions")
def sessions():
    limit = int_arg("limit", 50, 1, LIST_LIMIT_MAX)
    offset = int_arg("offset", 0, 0, LIST_OFFSET_MAX)
    return jsonify(_call(producer.list_sessions, request.args.get("status"), limit, offset))


@bp.get("/sessions/<session_id>/history")
def session_history(session_id: str):
    session = _call(producer.get_session, checked_id(session_id))
    return jsonify({"session_id": session["session_id"], "history": history(services.redis(), session_id)})


@bp.delete("/sessions/<session_id>")
@require_token
def delete(session_id: str):
    return jsonify(_call(producer.delete_session, checked_id(session_id), services.settings()))
