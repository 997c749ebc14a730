"""How `trainhost web` serves the app: waitress, with limits that keep it answering under a flood of
slow or idle clients.

waitress reads requests on one asyncore loop and hands only complete ones to its threads, so an idle
or half-sent connection costs a socket and a little memory, never a thread. What stops it answering
is its connection limit (100 by default): once that many sockets are open it stops accepting, and
a new client, /health included, waits until the idle ones time out (120 s by default, checked every
30 s). So: a connection limit well above what a flood of a few hundred sockets reaches, a poll()
loop (select() cannot watch descriptors above 1024), a short idle timeout checked often, and the
body size limit the app applies anyway, so a half-sent body announced as 1 GB is refused at once
rather than buffered.
"""

from __future__ import annotations

import logging
import resource
from typing import Any

from flask import Flask

from trainhost.config import Settings

log = logging.getLogger("trainhost.web")
SPARE_DESCRIPTORS = 128  # for Redis connections, log files, NVML, temporary body files
CLEANUP_INTERVAL_SECONDS = 2  # how often idle connections are looked for (a scan of the open sockets)


def open_file_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files towards `wanted` (up to the hard limit); return
    the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return wanted if soft == resource.RLIM_INFINITY else soft


def waitress_options(settings: Settings) -> dict[str, Any]:
    """The waitress settings for `settings` (web_threads, web_connection_limit, web_channel_timeout)."""
    descriptors = open_file_limit(settings.web_connection_limit + SPARE_DESCRIPTORS)
    connection_limit = min(settings.web_connection_limit, max(10, descriptors - SPARE_DESCRIPTORS))
    if connection_limit < settings.web_connection_limit:
        log.warning("web_connection_limit %d lowered to %d: the open-file limit is %d",
                    settings.web_connection_limit, connection_limit, descriptors)
    return {
        "threads": settings.web_threads,
        "connection_limit": connection_limit,
        "channel_timeout": settings.web_channel_timeout,
        "cleanup_interval": min(CLEANUP_INTERVAL_SECONDS, settings.web_channel_timeout),
        "asyncore_use_poll": True,
        "max_request_body_size": settings.max_request_bytes,
        "ident": "trainhost",
    }


def serve(app: Flask, host: str, port: int) -> None:
    """Serve `app` (from create_app) with waitress on host:port until interrupted."""
    import waitress

    waitress.serve(app, host=host, port=port, **waitress_options(app.extensions["trainhost.settings"]))
