"""The operator dashboard: sessions, GPUs, workers and queues at `/`, one page per session.

Pages are rendered on the server (readable without JavaScript); static/dashboard.js then polls the
JSON API (/training/sessions, /health/detailed, /training/status/<id>, .../history) to keep them live.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, current_app, render_template
from redis.exceptions import OutOfMemoryError, RedisError

from trainhost.jobs import producer
from trainhost.jobs.pipeline.label_specs import SIGNAL_CLASSES
from trainhost.jobs.pipeline.metric_labels import BACKTEST_METRICS, MetricLabel, format_metric
from trainhost.jobs.producer import RequestError
from trainhost.jobs.schemas import SESSION_ID_PATTERN
from trainhost.jobs.sessions import history
from trainhost.status_api import services
from trainhost.status_api.errors import OUT_OF_MEMORY
from trainhost.status_api.health import queues_summary, workers_summary
from trainhost.status_api.system_info import gpu_summary

bp = Blueprint("dashboard", __name__)
SESSIONS_SHOWN = 50
POLL_MS = 1500


@bp.app_template_filter("when")
def when(iso: str | None) -> str:
    """`2024-05-01T12:34:56.789+00:00` → `2024-05-01 12:34:56` (times are UTC)."""
    return iso[:19].replace("T", " ") if iso else "—"


@bp.app_template_filter("duration")
def duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):  # None, or a field the record lacks
        return "—"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


@bp.app_template_filter("metric")
def metric(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "—"


@bp.app_template_global()
def class_names(count: int, mapping: dict[str, str] | None = None) -> tuple[str, ...]:
    """Class names from the result's label mapping (regime has 4, context its own), else BUY/HOLD/SELL."""
    if mapping and len(mapping) == count:
        return tuple(mapping[str(i)] if str(i) in mapping else mapping.get(i, str(i)) for i in range(count))
    return SIGNAL_CLASSES if count == len(SIGNAL_CLASSES) else tuple(str(i) for i in range(count))


@bp.app_template_global()
def elapsed(session: dict[str, Any]) -> float | None:
    """Seconds from start to end (or to now while it runs)."""
    if not session.get("started_at"):
        return None
    end = datetime.fromisoformat(session["ended_at"]) if session.get("ended_at") else datetime.now(UTC)
    return (end - datetime.fromisoformat(session["started_at"])).total_seconds()


@bp.app_template_global()
def device_label(device: dict[str, Any] | None) -> str:
    if not device:
        return "—"
    kind = device.get("type") or "?"
    index = device.get("index")
    label = f"{kind}:{index}" if index is not None and kind != "cpu" else kind
    return f"{label} ({device['name']})" if device.get("name") else label


@bp.app_template_global()
def market(session: dict[str, Any]) -> str:
    return " ".join(filter(None, [", ".join(session.get("symbols") or []), ", ".join(session.get("timeframes") or [])]))


@bp.app_template_global()
def backtest_rows() -> tuple[MetricLabel, ...]:
    return BACKTEST_METRICS


@bp.app_template_filter("backtest_value")
def backtest_value(value: Any, unit: str) -> str:
    return format_metric(value, unit)


def _page_context() -> dict[str, Any]:
    return {"poll_ms": POLL_MS, "token_required": bool(services.settings().token),
            "rq_dashboard": "rq_dashboard" in current_app.blueprints}


def _unavailable(exc: Exception) -> str:
    if isinstance(exc, RequestError):
        return exc.message
    return OUT_OF_MEMORY if isinstance(exc, OutOfMemoryError) else f"Redis is unreachable: {exc}"


@bp.get("/")
def index():
    settings = services.settings()
    context: dict[str, Any] = {"gpu": gpu_summary(), "sessions": [], "workers": [], "queues": {}}
    try:
        connection = services.redis()
        context.update(sessions=producer.list_sessions(connection, limit=SESSIONS_SHOWN)["sessions"],
                       workers=workers_summary(connection), queues=queues_summary(connection, settings.queues))
    except (RedisError, RequestError) as exc:
        context["problem"] = _unavailable(exc)
    return render_template("dashboard.html", **context, **_page_context())


def _message(title: str, text: str, status: int):
    return render_template("message.html", title=title, text=text, **_page_context()), status


@bp.get("/sessions/<session_id>")
def session_page(session_id: str):
    if not re.fullmatch(SESSION_ID_PATTERN, session_id):
        return _message("Invalid session id", "A session id matches [A-Za-z0-9_-]{1,64}.", 400)
    try:
        connection = services.redis()
        session = producer.get_session(connection, session_id)
        records = history(connection, session_id)
    except RequestError as exc:  # no such session, or no Redis configured
        return _message("Unknown session" if exc.status == 404 else "Redis unavailable", exc.message, exc.status)
    except RedisError as exc:
        return _message("Redis unavailable", _unavailable(exc), 503)
    return render_template("session.html", session=session, history=records, **_page_context())
