"""`trainhost` — the command line: worker, web, the whole stack, sample data."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time

from config import ConfigError, Settings, load_settings

log = logging.getLogger("trainhost")


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from worker.devices import detect_device_type, pin_gpu, worker_name

    pin_gpu(args.gpu)  # before torch is imported anywhere in this process
    started = time.monotonic()
    import torch  # noqa: F401 - preloaded so forked work horses do not import it again
    from rq import Queue
    from rq.serializers import JSONSerializer

    from jobs.allowlist import allowed_functions
    from jobs.connection import connect
    from worker.logs import setup_logging
    from worker.rq_worker import TrainhostWorker, preload
    from worker.stack import ensure_redis, release_redis

    device_type = detect_device_type()
    name = worker_name(args.gpu, device_type)
    setup_logging(settings.log_level, settings.logs_dir, f"worker-{name.replace(':', '_')}.log")
    allowed = allowed_functions(settings.extra_job_functions)
    preloaded = preload(allowed)
    url, server = ensure_redis(settings)
    try:
        connection = connect(url)
        queue_names = args.queues.split(",") if args.queues else settings.queues
        queues = [Queue(q, connection=connection, serializer=JSONSerializer) for q in queue_names]
        worker = TrainhostWorker(queues, connection=connection, name=name, allowed=allowed)
        log.info("worker %s on %s, queues %s, device %s, preloaded %s, ready in %.2f s",
                 name, _redact(url), ",".join(queue_names), device_type, ",".join(preloaded) or "-",
                 time.monotonic() - started)
        worker.work(burst=args.burst, logging_level=settings.log_level)
    finally:
        release_redis(settings, server)
    return 0


def cmd_web(settings: Settings, args: argparse.Namespace) -> int:
    import waitress

    from status_api import create_app
    from worker.logs import setup_logging
    from worker.stack import ensure_redis, release_redis

    setup_logging(settings.log_level, settings.logs_dir, "web.log")
    host, port = args.host or settings.host, args.port or settings.port
    url, server = ensure_redis(settings)
    try:
        app = create_app({"host": host, "port": port, "redis_url": url})
        log.info("web on http://%s:%d (redis %s)", host, port, _redact(url))
        waitress.serve(app, host=host, port=port, threads=8, ident="trainhost")
    finally:
        release_redis(settings, server)
    return 0


def cmd_redis(settings: Settings, args: argparse.Namespace) -> int:
    from worker.logs import setup_logging
    from worker.stack import ensure_redis, release_redis

    setup_logging(settings.log_level, settings.logs_dir, "redis.log")
    url, server = ensure_redis(settings)
    if server is None:
        print(f"Redis already available at {_redact(url)}")
        return 0
    print(f"embedded Redis at {url} — Ctrl-C to stop")
    try:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while server.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        release_redis(settings, server)
    return 0


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """Embedded Redis (unless redis_url is set), one worker and the web app, until Ctrl-C."""
    from worker.logs import setup_logging
    from worker.stack import ensure_redis, release_redis

    setup_logging(settings.log_level, settings.logs_dir, "stack.log")
    url, server = ensure_redis(settings)
    env = {**os.environ, "TRAINHOST_REDIS_URL": url}
    me = [sys.executable, "-m", "worker.cli"]
    children = [subprocess.Popen(me + ["worker"], env=env)]
    if not args.no_web:
        children.append(subprocess.Popen(me + ["web"], env=env))
    print(f"stack up: redis {_redact(url)}, web http://{settings.host}:{settings.port}/ — Ctrl-C to stop")
    try:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop_children(children)
        release_redis(settings, server)
    return 0


def stop_children(children: list[subprocess.Popen], timeout: float = 30) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def cmd_sample_data(settings: Settings, args: argparse.Namespace) -> int:
    from worker.sample_data import write_sample_data

    for path in write_sample_data(args.data_dir or settings.data_dir):
        print(path)
    return 0


def _redact(url: str) -> str:
    """Never print a Redis password."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainhost", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run an RQ worker (one per GPU)")
    worker.add_argument("--gpu", type=int, default=None, help="pin to this GPU index (CUDA_VISIBLE_DEVICES)")
    worker.add_argument("--queues", default=None, help="comma-separated queue names (default: config)")
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.set_defaults(func=cmd_worker)

    web = sub.add_parser("web", help="serve the status app and HTTP API (waitress)")
    web.add_argument("--host", default=None)
    web.add_argument("--port", type=int, default=None)
    web.set_defaults(func=cmd_web)

    sub.add_parser("redis", help="run the embedded Redis in the foreground").set_defaults(func=cmd_redis)

    up = sub.add_parser("up", help="embedded Redis + worker + web until Ctrl-C")
    up.add_argument("--no-web", action="store_true")
    up.set_defaults(func=cmd_up)

    sample = sub.add_parser("sample-data", help="write EURUSD_1h.csv and GOOG_1d.csv to the data root")
    sample.add_argument("--data-dir", default=None)
    sample.set_defaults(func=cmd_sample_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"trainhost: {exc}", file=sys.stderr)
        return 2
    return args.func(settings, args)


if __name__ == "__main__":
    sys.exit(main())
