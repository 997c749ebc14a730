"""Finding Redis for a process: the configured URL, the running embedded server, or a new one."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from config import Settings
from jobs.connection import connect, embedded_url_file, resolve_redis_url
from worker.redis_server import RedisServer

log = logging.getLogger("trainhost")


def _answers(url: str) -> bool:
    try:
        return bool(connect(url, socket_connect_timeout=1).ping())
    except RedisError:
        return False


def ensure_redis(settings: Settings) -> tuple[str, RedisServer | None]:
    """The Redis URL to use, plus the embedded server if this call started it (the caller stops it).

    With `redis_url` set nothing is started. Otherwise an embedded server that another process of
    this host already runs (its URL is in var_dir) is shared; failing that one is started here.
    """
    url = resolve_redis_url(settings)
    if settings.redis_url or (url and _answers(url)):
        return url, None
    server = RedisServer(settings.var_dir / "redis").start()
    url_file = embedded_url_file(settings)
    url_file.write_text(server.url + "\n")
    log.info("embedded redis-server started at %s (AOF in %s)", server.url, server.data_dir)
    return server.url, server


def release_redis(settings: Settings, server: RedisServer | None) -> None:
    if server is None:
        return
    url_file = embedded_url_file(settings)
    if url_file.is_file() and url_file.read_text().strip() == server.url:
        url_file.unlink()
    server.stop()
    log.info("embedded redis-server stopped")
