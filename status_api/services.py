"""Per-app access to settings and Redis."""

from __future__ import annotations

from flask import current_app
from redis import Redis

from config import Settings
from jobs.connection import connect, resolve_redis_url
from status_api.errors import ApiError


def settings() -> Settings:
    return current_app.extensions["trainhost.settings"]


def redis() -> Redis:
    """The app's Redis client (created on first use); 503 when no Redis is configured or running."""
    client = current_app.config.get("REDIS_CLIENT")
    if client is None:
        url = resolve_redis_url(settings())
        if url is None:
            raise ApiError(503, "redis_unavailable",
                           "no Redis configured: set redis_url, or start the stack (trainhost up)")
        client = connect(url)
        current_app.config["REDIS_CLIENT"] = client
    return client
