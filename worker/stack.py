"""Finding Redis for a process: the configured one, the running embedded server, or a new one."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from redis.retry import Retry

from trainhost.config import Settings
from trainhost.jobs.connection import connect, embedded_url_file, resolve_redis_url
from trainhost.worker.redis_server import RedisServer

log = logging.getLogger("trainhost")


def _answers(url: str) -> bool:
    try:
        return bool(connect(url, socket_connect_timeout=1, retry=Retry(None, 0)).ping())
    except RedisError:
        return False


def ensure_redis(settings: Settings) -> RedisServer | None:
    """Start the embedded server unless Redis is configured (`redis_url`, Sentinel) or another process
    of this host already runs it (its URL is in var_dir). Returns the server this call started, which
    the caller stops with `release_redis`."""
    if settings.redis_url or settings.redis_sentinels:
        return None
    url = resolve_redis_url(settings)
    if url and _answers(url):
        return None
    server = RedisServer(settings.var_dir / "redis").start()
    embedded_url_file(settings).write_text(server.url + "\n")
    log.info("embedded redis-server started at %s (AOF in %s)", server.url, server.data_dir)
    return server


def release_redis(settings: Settings, server: RedisServer | None) -> None:
    if server is None:
        return
    url_file = embedded_url_file(settings)
    if url_file.is_file() and url_file.read_text().strip() == server.url:
        url_file.unlink()
    server.stop()
    log.info("embedded redis-server stopped")
