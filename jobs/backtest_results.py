"""A finished session's backtest files, read back for the API: its trades page by page, its equity
curve downsampled. Light (csv, no pandas): the web process has no pandas.

The files live in the model folder, `evaluations/<session_id>/` (jobs/pipeline/model_backtest.py
writes them); the session's result names the model folder, and every file is opened as a regular
file inside the models root.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from redis import Redis

from trainhost.config import Settings
from trainhost.jobs.pipeline.errors import PipelineError
from trainhost.jobs.pipeline.model_paths import open_model_file, resolve_model_path
from trainhost.jobs.producer import RequestError, get_result

BACKTEST_FOLDER = "evaluations"
TRADES_FILE, EQUITY_FILE = "trades.csv", "equity.csv"
MAX_TRADES_PAGE = 1000
MAX_EQUITY_POINTS = 10_000


def read_rows(settings: Settings, result: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The rows of backtest file `name` of a session whose `result` is given (RequestError when the
    session has no backtest, or its files are gone)."""
    session_id = result["session_id"]
    backtest = result.get("backtest") or {}
    if not backtest.get("metrics"):
        reason = backtest.get("skipped") or "its result has no backtest"
        raise RequestError(404, "no_backtest", f"session {session_id!r} has no backtest: {reason}")
    try:
        folder = resolve_model_path(settings.models_dir, result["model_path"]) / BACKTEST_FOLDER / session_id
        with open_model_file(folder, name) as handle:
            text = handle.read().decode("utf-8")
    except PipelineError as exc:
        raise RequestError(404, "no_backtest", f"session {session_id!r}: its backtest files are gone ({exc})") from None
    return [{key: _value(value) for key, value in row.items()} for row in csv.DictReader(io.StringIO(text))]


def trades_page(rows: list[dict[str, Any]], limit: int, offset: int) -> dict[str, Any]:
    return {"total": len(rows), "limit": limit, "offset": offset, "trades": rows[offset:offset + limit]}


def equity_points(rows: list[dict[str, Any]], points: int) -> dict[str, Any]:
    """At most `points` points of the curve, evenly spaced, the first and the last always among them."""
    step = max(1, math.ceil(len(rows) / points))
    chosen = rows[::step]
    if rows and chosen[-1] is not rows[-1]:
        chosen = chosen[:-1] + [rows[-1]] if len(chosen) >= points else chosen + [rows[-1]]
    return {"total_points": len(rows), "step": step, "points": chosen}


def session_backtest_rows(connection: Redis, settings: Settings, session_id: str, name: str) -> list[dict]:
    return read_rows(settings, get_result(connection, session_id), name)


def _value(text: str) -> Any:
    """A CSV cell as a number or boolean where it is one; empty cells (NaN) as None."""
    if text in ("", "nan", "NaN"):
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text
