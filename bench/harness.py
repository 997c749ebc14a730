"""Processes for the benchmarks: a private redis-server (never the machine's 6379), `trainhost worker`
and `trainhost web` started as the Procfile starts them, RQ's own `rq worker`, and cleanup of all of
them however a benchmark ends."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Worker
from rq.serializers import JSONSerializer

from trainhost.worker.redis_server import RedisServer, free_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TINY_JOBS = "bench.tiny_jobs.tiny,bench.tiny_jobs.hold"


def trainhost_command() -> list[str]:
    """The Procfile's `trainhost` (the console script of this venv), else the module."""
    script = BIN / "trainhost"
    return [str(script)] if script.exists() else [sys.executable, "-m", "trainhost.worker.cli"]


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: list[float]) -> float:
    return statistics.median(values)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except (urllib.error.URLError, OSError):
        return False


class Stack:
    """A temporary directory, a private Redis, and every process a benchmark starts; `close()` (or the
    context manager) stops them all and removes the directory."""

    def __init__(self, name: str, keep: bool = False):
        self.tmp = Path(tempfile.mkdtemp(prefix=f"trainhost-bench-{name}-"))
        self.keep = keep
        self.processes: list[subprocess.Popen] = []
        self.redis_server = RedisServer(self.tmp / "redis").start()
        self.url = self.redis_server.url
        self.redis = Redis.from_url(self.url)
        self.data_dir = self.tmp / "data"
        self.models_dir = self.tmp / "models"
        self.data_dir.mkdir()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- environment ------------------------------------------------------------------------------
    def env(self, **settings: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINHOST_") and k != "REDIS_URL"}
        env.update(
            PYTHONPATH=str(REPO),
            TRAINHOST_REDIS_URL=self.url,
            TRAINHOST_LOGS_DIR=str(self.tmp / "logs"),
            TRAINHOST_VAR_DIR=str(self.tmp / "var"),
            TRAINHOST_DATA_DIR=str(self.data_dir),
            TRAINHOST_MODELS_DIR=str(self.models_dir),
            TRAINHOST_EXTRA_JOB_FUNCTIONS=TINY_JOBS,
        )
        env.update({f"TRAINHOST_{key.upper()}": str(value) for key, value in settings.items()})
        return env

    def settings(self, **overrides: Any):
        """Settings as the started processes see them (for the producer API in this process)."""
        from trainhost.config import load_settings

        return load_settings({"redis_url": self.url, "data_dir": self.data_dir, "models_dir": self.models_dir,
                              "logs_dir": self.tmp / "logs", "var_dir": self.tmp / "var", **overrides})

    # -- processes --------------------------------------------------------------------------------
    def spawn(self, args: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log_path = self.tmp / "logs" / log_name
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            process = subprocess.Popen(args, cwd=REPO, env=env or self.env(), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        process.log_path = log_path  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    def log_tail(self, process: subprocess.Popen, chars: int = 3000) -> str:
        path: Path = process.log_path  # type: ignore[attr-defined]
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def _wait_registered(self, process: subprocess.Popen, before: set[str], timeout: float) -> str:
        def registered() -> set[str] | None:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited with {process.returncode}:\n{self.log_tail(process)}")
            names = {w.name for w in Worker.all(connection=self.redis, serializer=JSONSerializer)}
            return (names - before) or None

        return wait_for(registered, timeout, "the worker to register", interval=0.1).pop()

    def worker_names(self) -> set[str]:
        return {w.name for w in Worker.all(connection=self.redis, serializer=JSONSerializer)}

    def start_worker(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.Popen:
        """`trainhost worker ARGS` (the Procfile's worker); returns once it is registered in Redis."""
        before = self.worker_names()
        process = self.spawn([*trainhost_command(), "worker", *args], f"worker{len(self.processes)}.log", env)
        process.worker_name = self._wait_registered(process, before, timeout)  # type: ignore[attr-defined]
        return process

    def start_rq_worker(self, queues: list[str], timeout: float = 60) -> subprocess.Popen:
        """RQ's own CLI worker (the default forking Worker), JSON serializer, this repo importable."""
        before = self.worker_names()
        rq = BIN / "rq"
        command = [str(rq)] if rq.exists() else [sys.executable, "-m", "rq.cli"]
        process = self.spawn([*command, "worker", "--url", self.url, "--serializer", "rq.serializers.JSONSerializer",
                              "--path", str(REPO), *queues], f"rq-worker{len(self.processes)}.log")
        process.worker_name = self._wait_registered(process, before, timeout)  # type: ignore[attr-defined]
        return process

    def start_web(self, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[subprocess.Popen, str]:
        """`trainhost web` (waitress) on a free loopback port; returns (process, base URL)."""
        port = free_port()
        process = self.spawn([*trainhost_command(), "web", "--port", str(port)], f"web{len(self.processes)}.log", env)
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"web exited with {process.returncode}:\n{self.log_tail(process)}")
            return http_ok(f"{base}/health")

        wait_for(answers, timeout, f"{base}/health to answer", interval=0.1)
        return process, base

    def stop(self, process: subprocess.Popen, timeout: float = 15) -> None:
        """SIGTERM (a worker's warm shutdown), SIGKILL after `timeout`; then any child it left behind
        (a work horse runs in its own process group) is killed too."""
        import psutil

        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            children = []
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for child in children:
            try:
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    child.kill()
            except psutil.Error:
                pass
        if process in self.processes:
            self.processes.remove(process)

    def close(self) -> None:
        for process in reversed(list(self.processes)):
            self.stop(process)
        try:
            self.redis.close()
        finally:
            self.redis_server.stop()
            if not self.keep:
                shutil.rmtree(self.tmp, ignore_errors=True)


def wait_result(job, timeout: float):
    """The job's result, waiting on its result stream in short blocks (redis-py's socket timeout
    would end one long block); None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        block = max(1, min(2, int(deadline - time.monotonic())))
        result = job.latest_result(timeout=block)
        if result is not None or time.monotonic() >= deadline:
            return result


def worker_state(connection: Redis, name: str) -> str | None:
    raw = connection.hget(f"rq:worker:{name}", "state")
    return raw.decode() if raw else None
