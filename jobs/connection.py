"""Redis connection for producer, worker and web alike: a URL, the embedded server, or Sentinel."""

from __future__ import annotations

from pathlib import Path

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

from trainhost.config import Settings

EMBEDDED_URL_FILE = "redis.url"


def embedded_url_file(settings: Settings) -> Path:
    return settings.var_dir / EMBEDDED_URL_FILE


def resolve_redis_url(settings: Settings) -> str | None:
    """`redis_url` when set; else the URL of the embedded server if one is running; else None."""
    if settings.redis_url:
        return settings.redis_url
    url_file = embedded_url_file(settings)
    if url_file.is_file():
        return url_file.read_text().strip() or None
    return None


def _client_options(**overrides) -> dict:
    """Bounded timeouts (a dead Redis gives an error, not a hang) and retries with backoff, so a
    Redis restart or a Sentinel failover of a few seconds is ridden out transparently."""
    options = {
        "socket_connect_timeout": 2,
        "socket_timeout": 10,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=6),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    options.update(overrides)
    return options


def connect(url: str, **overrides) -> Redis:
    return Redis.from_url(url, **_client_options(**overrides))


def sentinel_master(settings: Settings, **overrides) -> Redis:
    """A client that asks the sentinels where the master is, again after every failover."""
    addresses = [(host, int(port)) for host, _, port in (a.rpartition(":") for a in settings.redis_sentinels)]
    sentinel = Sentinel(addresses, socket_timeout=2, socket_connect_timeout=2)
    return sentinel.master_for(settings.redis_sentinel_master, **_client_options(**overrides))


def redis_client(settings: Settings, **overrides) -> Redis | None:
    """The configured Redis: Sentinel, else `redis_url` or the embedded server; None if none is known."""
    if settings.redis_sentinels:
        return sentinel_master(settings, **overrides)
    url = resolve_redis_url(settings)
    return connect(url, **overrides) if url else None


def describe(settings: Settings) -> str:
    """Where Redis is, for logs: never with a password."""
    if settings.redis_sentinels:
        return f"sentinel {','.join(settings.redis_sentinels)} master {settings.redis_sentinel_master}"
    url = resolve_redis_url(settings) or "(none)"
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url
