"""Per-app access to settings and Redis."""

from __future__ import annotations

import hmac

from flask import current_app
from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from trainhost.config import Settings
from trainhost.jobs.connection import redis_client
from trainhost.status_api.errors import ApiError


def token_matches(given: str | None) -> bool:
    """True when no api_token is configured, or `given` is it (compared in constant time)."""
    token = settings().token
    return not token or (given is not None and hmac.compare_digest(given.encode(), token.encode()))


def settings() -> Settings:
    return current_app.extensions["trainhost.settings"]


def redis() -> Redis:
    """The app's Redis client (created on first use); 503 when no Redis is configured or running."""
    client = current_app.config.get("REDIS_CLIENT")
    if client is None:
        client = redis_client(settings(), retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2))
        if client is None:
            raise ApiError(503, "redis_unavailable",
                           "no Redis configured: set redis_url, or start the stack (trainhost up)")
        current_app.config["REDIS_CLIENT"] = client
    return client
