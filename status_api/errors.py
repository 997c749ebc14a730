"""JSON errors everywhere: `{"error": {"code", "message", "details"}}`, never an HTML page. A refused
request is a `producer.RequestError` wherever it is raised (the producer API, or a view here)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException

from trainhost.jobs.producer import RequestError

log = logging.getLogger("trainhost.web")

# A full Redis (maxmemory reached, nothing it may evict) still answers and still serves reads: it is
# not "unreachable", and a caller should free memory rather than wait for it to come back.
OUT_OF_MEMORY = ("Redis is out of memory (maxmemory reached and nothing it may evict): it refuses writes, "
                 "so nothing was changed; reads still work. Free memory in Redis or raise its maxmemory.")


def error_response(status: int, code: str, message: str, details: Any = None):
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return jsonify({"error": body}), status


def register(app: Flask) -> None:
    @app.errorhandler(RequestError)  # raised by the producer API and by the web layer alike
    def _refused(exc: RequestError):
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.errorhandler(OutOfMemoryError)
    def _redis_full(exc: OutOfMemoryError):
        log.warning("redis out of memory: %s", exc)
        return error_response(507, "redis_out_of_memory", OUT_OF_MEMORY)

    @app.errorhandler(RedisError)
    def _redis_down(exc: RedisError):
        log.warning("redis error: %s", exc)
        if isinstance(exc, RedisConnectionError | RedisTimeoutError):
            return error_response(503, "redis_unavailable", f"Redis is unreachable: {exc}")
        # Redis answered but refused the command: its reply (which may quote the command) stays in the log.
        return error_response(503, "redis_unavailable", f"Redis refused the request ({type(exc).__name__}); "
                              "the details are in the server log")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        body, status = error_response(exc.code or 500, code, exc.description or exc.name)
        # Keep what Werkzeug says beside the error (e.g. Allow on a 405), not its HTML content type.
        headers = [(name, value) for name, value in exc.get_headers() if name.lower() != "content-type"]
        return body, status, headers

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; the details are in the server log")
