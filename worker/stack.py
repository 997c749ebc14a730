"""Finding Redis for a process: the configured one, the running embedded server, or a new one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from trainhost.config import Settings
from trainhost.jobs.connection import connect, embedded_url_file, resolve_redis_url
from trainhost.worker.redis_server import RedisServer

log = logging.getLogger("trainhost")


def _already_running(settings: Settings) -> bool:
    """Whether another process of this host runs the embedded server (its URL is in var_dir)."""
    url = resolve_redis_url(settings)
    if not url:
        return False
    try:
        return bool(connect(url, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)).ping())
    except RedisError:
        return False


@contextmanager
def embedded_redis(settings: Settings) -> Iterator[RedisServer | None]:
    """Redis for as long as a command runs: the embedded server, started here and stopped on the way
    out, unless Redis is configured (`redis_url`, Sentinel) or another process of this host already
    runs it. Yields the server started here, else None."""
    if settings.redis_url or settings.redis_sentinels or _already_running(settings):
        yield None
        return
    server = RedisServer(settings.var_dir / "redis").start()
    url_file = embedded_url_file(settings)
    url_file.write_text(server.url + "\n")
    log.info("embedded redis-server started at %s (AOF in %s)", server.url, server.data_dir)
    try:
        yield server
    finally:
        if url_file.is_file() and url_file.read_text().strip() == server.url:
            url_file.unlink()
        server.stop()
        log.info("embedded redis-server stopped")
