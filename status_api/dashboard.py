"""The operator dashboard: experiments, sessions, GPUs, workers and queues at `/`, one page per
session and one per experiment.

Pages are rendered on the server (readable without JavaScript); static/dashboard.js then polls the
JSON API (/training/sessions, /experiments, /health/detailed, /training/status/<id>, .../history,
/experiments/<id>) to keep them live. An experiment's JSON is at /experiments/<id>, so its page is at
/experiments/<id>/page.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, NamedTuple

from flask import Blueprint, current_app, render_template
from redis.exceptions import OutOfMemoryError, RedisError

from trainhost.jobs import experiments, producer
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
EXPERIMENTS_SHOWN = 10
POLL_MS = 1500
# A walk-forward trial's stitched out-of-sample metrics shown in the comparison table.
OOS_COLUMNS = ("total_return_pct", "sharpe", "max_drawdown_pct", "trade_count")
EXPERIMENT_FINISHED = ("completed", "stopped")


class Column(NamedTuple):
    """A column of an experiment's comparison table. `key` says where a row's value is (`trial`,
    `status`, `objective`, `param:<path>`, `validation.<metric>`, `oos.<metric>`) and `unit` how it
    is written (`value`, `metric`, `status`, or a backtest metric's unit); dashboard.js renders
    the rows from the header's keys and units."""

    key: str
    label: str
    unit: str


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


@bp.app_template_filter("param_value")
def param_value(value: Any) -> str:
    """A swept value as dashboard.js writes it: numbers to 4 significant digits, booleans in lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return metric(value) if isinstance(value, int | float) else str(value)


@bp.app_template_global()
def trial_columns(experiment: dict[str, Any]) -> list[Column]:
    """The trial number, one column per swept parameter, status, objective, the validation metrics,
    and for a walk-forward its out-of-sample metrics."""
    objective = experiment["objective"]
    arrow = "↑" if objective.get("direction", "maximize") == "maximize" else "↓"
    rows = experiment["rows"]
    columns = [Column("trial", "trial", "value")]
    columns += [Column(f"param:{path}", path, "value") for path in (rows[0]["params"] if rows else {})]
    columns += [Column("status", "status", "status"),
                Column("objective", f"objective {objective['metric']} {arrow}", "metric"),
                Column("validation.val_accuracy", "val accuracy", "metric"),
                Column("validation.val_loss", "val loss", "metric")]
    if experiment.get("walk_forward"):
        labels = {m.key: m for m in BACKTEST_METRICS}
        columns += [Column(f"oos.{key}", f"OOS {labels[key].label}", labels[key].unit) for key in OOS_COLUMNS]
    return columns


@bp.app_template_global()
def row_value(row: dict[str, Any], key: str) -> Any:
    """The value of `row` in the column `key` (see Column)."""
    if key.startswith("param:"):
        return row["params"].get(key[6:])
    section, _, name = key.partition(".")
    if name:
        return (row.get(section) or {}).get(name)
    return row.get(key)


@bp.app_template_filter("cell_text")
def cell_text(value: Any, unit: str) -> str:
    """A cell's text (a status cell is its badge)."""
    if unit == "value":
        return "—" if value is None else param_value(value)
    return metric(value) if unit == "metric" else format_metric(value, unit)


@bp.app_template_filter("sort_key")
def sort_key(value: Any) -> str:
    """A cell's data-sort: the raw number (dashboard.js sorts numbers as numbers), else the text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    return repr(value) if isinstance(value, int | float) else str(value)


@bp.app_template_global()
def children_percent(experiment: dict[str, Any]) -> float:
    children = experiment["children"]
    return 100.0 * children["done"] / children["total"] if children["total"] else 0.0


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
    context: dict[str, Any] = {"gpu": gpu_summary(), "sessions": [], "experiments": [], "workers": [], "queues": {}}
    try:
        connection = services.redis()
        context.update(sessions=producer.list_sessions(connection, limit=SESSIONS_SHOWN)["sessions"],
                       experiments=experiments.list_experiments(connection, limit=EXPERIMENTS_SHOWN)["experiments"],
                       workers=workers_summary(connection), queues=queues_summary(connection, settings.queues))
    except (RedisError, RequestError) as exc:
        context["problem"] = _unavailable(exc)
    return render_template("dashboard.html", **context, experiments_shown=EXPERIMENTS_SHOWN, **_page_context())


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


@bp.get("/experiments/<experiment_id>/page")
def experiment_page(experiment_id: str):
    if not re.fullmatch(SESSION_ID_PATTERN, experiment_id):
        return _message("Invalid experiment id", "An experiment id matches [A-Za-z0-9_-]{1,64}.", 400)
    try:
        experiment = experiments.get_experiment(services.redis(), experiment_id)
    except RequestError as exc:  # no such experiment, or no Redis configured
        return _message("Unknown experiment" if exc.status == 404 else "Redis unavailable", exc.message, exc.status)
    except RedisError as exc:
        return _message("Redis unavailable", _unavailable(exc), 503)
    return render_template("experiment.html", experiment=experiment, finished_statuses=EXPERIMENT_FINISHED,
                           **_page_context())
