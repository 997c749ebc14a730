"""Redis connection for producer, worker and web alike."""

from __future__ import annotations

from pathlib import Path

from redis import Redis

from config import Settings

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


def connect(url: str, **kwargs) -> Redis:
    """A client with bounded timeouts, so a dead Redis gives an error, not a hang."""
    options = {"socket_connect_timeout": 2, "socket_timeout": 10, "health_check_interval": 30}
    options.update(kwargs)
    return Redis.from_url(url, **options)
