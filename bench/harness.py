"""Processes for the benchmarks: a private redis-server (never the machine's 6379), `trainhost worker`
and `trainhost web` started as the Procfile starts them, RQ's own `rq worker`, and cleanup of all of
them however a benchmark ends."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis import Redis

from trainhost.worker.processes import (
    isolated_env,
    spawn,
    start_web,
    start_worker,
    stop_process,
    trainhost_command,
)
from trainhost.worker.redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TINY_JOBS = "bench.tiny_jobs.tiny,bench.tiny_jobs.hold"


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
        settings = {"data_dir": self.data_dir, "models_dir": self.models_dir, "extra_job_functions": TINY_JOBS,
                    **settings}
        return {**isolated_env(self.url, self.tmp, **settings), "PYTHONPATH": str(REPO)}

    def settings(self, **overrides: Any):
        """Settings as the started processes see them (for the producer API in this process)."""
        from trainhost.config import load_settings

        return load_settings({"redis_url": self.url, "data_dir": self.data_dir, "models_dir": self.models_dir,
                              "logs_dir": self.tmp / "logs", "var_dir": self.tmp / "var", **overrides})

    # -- processes --------------------------------------------------------------------------------
    def _log(self, name: str) -> Path:
        return self.tmp / "logs" / f"{name}{len(self.processes)}.log"

    def spawn(self, args: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        process = spawn(args, env or self.env(), self.tmp / "logs" / log_name, cwd=REPO)
        self.processes.append(process)
        return process

    def start_worker(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.Popen:
        """`trainhost worker ARGS` (the Procfile's worker); returns once it is registered in Redis."""
        process = start_worker([*trainhost_command(), "worker", *args], env or self.env(), self._log("worker"),
                               self.redis, timeout, cwd=REPO)
        self.processes.append(process)
        return process

    def start_rq_worker(self, queues: list[str], timeout: float = 60) -> subprocess.Popen:
        """RQ's own CLI worker (the default forking Worker), JSON serializer, this repo importable."""
        rq = BIN / "rq"
        command = [str(rq)] if rq.exists() else [sys.executable, "-m", "rq.cli"]
        process = start_worker([*command, "worker", "--url", self.url, "--serializer", "rq.serializers.JSONSerializer",
                                "--path", str(REPO), *queues], self.env(), self._log("rq-worker"), self.redis,
                               timeout, cwd=REPO)
        self.processes.append(process)
        return process

    def start_web(self, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[subprocess.Popen, str]:
        """`trainhost web` (waitress) on a free loopback port; returns (process, base URL)."""
        process, base = start_web(env or self.env(), self._log("web"), timeout, cwd=REPO)
        self.processes.append(process)
        return process, base

    def stop(self, process: subprocess.Popen, timeout: float = 15) -> None:
        """A worker's warm shutdown (SIGKILL after `timeout`), then any work horse it left behind."""
        stop_process(process, timeout=timeout, descendants=True)
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
