"""`trainhost` — the command line: worker, web, the whole stack, sample data."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trainhost.config import ConfigError, Settings, load_settings
from trainhost.jobs.connection import resolve_redis_url
from trainhost.worker.client import add_client_commands, run_client
from trainhost.worker.processes import stop_process, trainhost_command
from trainhost.worker.stack import embedded_redis

log = logging.getLogger("trainhost")


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from trainhost.worker.devices import pin_gpu, worker_name

    pin_gpu(args.gpu)  # before torch is imported anywhere in this process
    started = time.monotonic()
    import torch  # noqa: F401 - preloaded so forked work horses do not import it again
    from rq import Queue
    from rq.serializers import JSONSerializer

    from trainhost.jobs.allowlist import allowed_functions
    from trainhost.jobs.connection import describe, redis_client
    from trainhost.jobs.pipeline.model import select_device
    from trainhost.worker.logs import setup_logging
    from trainhost.worker.rq_worker import TrainhostWorker, preload, warm_up_torch

    device_type = select_device().type
    name = worker_name(args.gpu, device_type)
    setup_logging(settings.log_level, settings.logs_dir, f"worker-{name.replace(':', '_')}.log")
    allowed = allowed_functions(settings.extra_job_functions)
    preloaded = preload(allowed)
    warm_up_torch()
    with embedded_redis(settings):
        connection = redis_client(settings)
        queue_names = args.queues.split(",") if args.queues else settings.queues
        queues = [Queue(q, connection=connection, serializer=JSONSerializer) for q in queue_names]
        worker = TrainhostWorker(queues, connection=connection, name=name, allowed=allowed,
                                 models_dir=settings.models_dir)
        log.info("worker %s on %s, queues %s, device %s, preloaded %s, ready in %.2f s",
                 name, describe(settings), ",".join(queue_names), device_type, ",".join(preloaded) or "-",
                 time.monotonic() - started)
        worker.work(burst=args.burst, logging_level=settings.log_level)
    return 0


def cmd_web(settings: Settings, args: argparse.Namespace) -> int:
    from trainhost.jobs.connection import describe
    from trainhost.status_api import create_app
    from trainhost.status_api.serving import serve
    from trainhost.worker.logs import setup_logging

    setup_logging(settings.log_level, settings.logs_dir, "web.log")
    host, port = args.host or settings.host, args.port or settings.port
    with embedded_redis(settings):
        app = create_app({"host": host, "port": port})
        log.info("web on http://%s:%d (redis %s)", host, port, describe(settings))
        serve(app, host, port)
    return 0


def cmd_redis(settings: Settings, args: argparse.Namespace) -> int:
    from trainhost.jobs.connection import describe
    from trainhost.worker.logs import setup_logging

    setup_logging(settings.log_level, settings.logs_dir, "redis.log")
    with embedded_redis(settings) as server:
        if server is None:
            print(f"Redis already available: {describe(settings)}")
            return 0
        print(f"embedded Redis at {server.url} — Ctrl-C to stop")
        try:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            while server.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


@contextmanager
def children(settings: Settings, web: bool = True, quiet: bool = False) -> Iterator[list[subprocess.Popen]]:
    """One worker and (optionally) the web app as child processes on this process's Redis, stopped
    on the way out. They share this terminal's process group: a Ctrl-C reaches them too."""
    env = dict(os.environ)
    embedded = resolve_redis_url(settings)
    if embedded and not settings.redis_sentinels:
        env["TRAINHOST_REDIS_URL"] = embedded
    output = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL} if quiet else {}
    started = [subprocess.Popen([*trainhost_command(), "worker"], env=env, **output)]
    try:
        if web:
            started.append(subprocess.Popen([*trainhost_command(), "web"], env=env, **output))
        yield started
    finally:
        stop_process(*started, timeout=30)


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """Embedded Redis (unless redis_url is set), one worker and the web app, until Ctrl-C."""
    from trainhost.jobs.connection import describe
    from trainhost.worker.logs import setup_logging

    setup_logging(settings.log_level, settings.logs_dir, "stack.log")
    with embedded_redis(settings), children(settings, web=not args.no_web) as started:
        print(f"stack up: redis {describe(settings)}, web http://{settings.host}:{settings.port}/ — Ctrl-C to stop")
        wait_for_exit(started)
    return 0


def wait_for_exit(started: list[subprocess.Popen]) -> None:
    """Until Ctrl-C, SIGTERM, or a child ends."""
    try:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(child.poll() is None for child in started):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """The whole product once: stack up, train the example strategy on real EURUSD 1h data with a live
    progress bar, evaluate the model on the last months, print the results, shut down."""
    from trainhost.jobs import producer
    from trainhost.jobs.connection import describe, redis_client
    from trainhost.worker.client import follow, print_summary
    from trainhost.worker.processes import wait_registered, worker_names
    from trainhost.worker.sample_data import write_sample_data

    write_sample_data(settings.data_dir)
    with embedded_redis(settings):
        connection = redis_client(settings)
        before = worker_names(connection)
        with children(settings, quiet=True) as started:
            print(f"redis {describe(settings)}; waiting for the worker...")
            try:
                wait_registered(connection, started[0], before, timeout=120)
            except (RuntimeError, TimeoutError):
                print("the worker did not start; see", settings.logs_dir, file=sys.stderr)
                return 1
            strategy = Path(__file__).resolve().parent.parent / "examples" / "strategies" / "v3_multi_indicator.yaml"
            submitted = producer.submit_training(connection, settings, {
                "strategy_yaml": strategy.read_text(), "start_date": "2017-05-01", "end_date": "2017-12-31",
                "epochs": args.epochs})
            print(f"training {strategy.name} on EURUSD 1h 2017-05-01..2017-12-31, session {submitted['session_id']}")
            trained = follow(connection, submitted["session_id"], settings)
            print_summary(trained)
            if trained["status"] != "completed":
                return 1
            model_path = trained["result"]["model_path"]
            evaluation = producer.submit_evaluation(connection, settings, {
                "model_path": model_path, "start_date": "2018-01-01", "end_date": "2018-02-07"})
            print(f"\nevaluating on EURUSD 1h 2018-01-01..2018-02-07 (unseen), session {evaluation['session_id']}")
            evaluated = follow(connection, evaluation["session_id"], settings)
            print_summary(evaluated)
            base = f"http://{settings.host}:{settings.port}"
            print(f"\nartifacts: {model_path}\nstatus:    {base}/training/status/{submitted['session_id']}"
                  f"\nhealth:    {base}/health/detailed")
            if args.keep:
                print("stack kept running — Ctrl-C to stop")
                wait_for_exit(started)
            return 0 if evaluated["status"] == "completed" else 1


def cmd_sample_data(settings: Settings, args: argparse.Namespace) -> int:
    from trainhost.worker.sample_data import write_sample_data

    for path in write_sample_data(args.data_dir or settings.data_dir):
        print(path)
    return 0


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

    demo = sub.add_parser("demo", help="stack up, train and evaluate the example strategy, shut down")
    demo.add_argument("--epochs", type=int, default=30)
    demo.add_argument("--keep", action="store_true", help="keep the stack running afterwards")
    demo.set_defaults(func=cmd_demo)

    add_client_commands(sub)

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
    return run_client(args.func, settings, args)


if __name__ == "__main__":
    sys.exit(main())
