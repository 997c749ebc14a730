"""Per-app access to settings and Redis."""

from __future__ import annotations

import hmac
from typing import Any

from flask import current_app, has_request_context, request
from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.client import Pipeline
from redis.retry import Retry

from trainhost.config import Settings
from trainhost.jobs.connection import redis_client
from trainhost.jobs.producer import RequestError


def token_matches(given: str | None) -> bool:
    """True when no api_token is configured, or `given` is it (compared in constant time)."""
    token = settings().token
    return not token or (given is not None and hmac.compare_digest(given.encode(), token.encode()))


def settings() -> Settings:
    return current_app.extensions["trainhost.settings"]


class ReadClient(Redis):
    """The app's client for requests that only read: the same connections, but pipelines without
    MULTI/EXEC. A full Redis (maxmemory reached) refuses every command queued inside a transaction,
    reads included, since queuing takes memory; RQ reads many jobs in one (Job.fetch_many), so a
    listing would fail where reading needs no memory. A read does not need the atomicity."""

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return super().pipeline(transaction=False, shard_hint=shard_hint)


def redis(reads_only: bool | None = None) -> Redis:
    """The app's Redis client (created on first use); 503 when no Redis is configured or running.
    `reads_only` (by default: the request is a GET or HEAD) gives the ReadClient on the same pool."""
    client = current_app.config.get("REDIS_CLIENT")
    if client is None:
        client = redis_client(settings(), retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2))
        if client is None:
            raise RequestError(503, "redis_unavailable",
                               "no Redis configured: set redis_url, or start the stack (trainhost up)")
        current_app.config["REDIS_CLIENT"] = client
    if reads_only is None:
        reads_only = has_request_context() and request.method in ("GET", "HEAD")
    if not reads_only:
        return client
    reader = current_app.config.get("REDIS_READ_CLIENT")
    if reader is None or reader.connection_pool is not client.connection_pool:
        reader = current_app.config["REDIS_READ_CLIENT"] = ReadClient(connection_pool=client.connection_pool)
    return reader
