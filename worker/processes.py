"""Starting, waiting for and stopping trainhost's processes: `trainhost` commands in sessions of their
own with their output in a log file, a worker counted as started once it registers in Redis, the web
app once it answers, and a stop that always ends a process. The stack commands, the benchmarks and
the integration tests all start and stop their processes through this module."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from redis import Redis
from rq import Worker
from rq.serializers import JSONSerializer

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def trainhost_command() -> list[str]:
    """`trainhost` as the Procfile runs it: the console script beside this interpreter, else the module."""
    script = Path(sys.executable).parent / "trainhost"
    return [str(script)] if script.exists() else [sys.executable, "-m", "trainhost.worker.cli"]


def isolated_env(redis_url: str, root: Path, **settings: Any) -> dict[str, str]:
    """This process's environment less its own trainhost settings (and REDIS_URL), for a child on
    `redis_url` with its logs and var_dir under `root`; `settings` become TRAINHOST_<NAME> variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINHOST_") and k != "REDIS_URL"}
    env.update(TRAINHOST_REDIS_URL=redis_url, TRAINHOST_LOGS_DIR=str(root / "logs"),
               TRAINHOST_VAR_DIR=str(root / "var"))
    env.update({f"TRAINHOST_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def spawn(args: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen:
    """`args` with stdout and stderr to `log_path`, in a session of its own (so a Ctrl-C meant for the
    caller does not reach it: the caller decides when it stops)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def log_tail(log_path: Path | None, chars: int = 3000) -> str:
    return log_path.read_text(errors="replace")[-chars:] if log_path is not None and log_path.exists() else ""


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """`predicate()`'s first true value, asked every `interval` seconds; TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def worker_names(connection: Redis) -> set[str]:
    return {w.name for w in Worker.all(connection=connection, serializer=JSONSerializer)}


def wait_registered(connection: Redis, process: subprocess.Popen, before: set[str], timeout: float,
                    log_path: Path | None = None) -> str:
    """The name of a worker that registered in Redis and is not in `before` (the names before
    `process` started); RuntimeError as soon as `process` exits instead."""
    def registered() -> set[str]:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}:\n{log_tail(log_path)}")
        return worker_names(connection) - before

    return wait_for(registered, timeout, "the worker to register", interval=0.1).pop()


def start_worker(command: list[str], env: dict[str, str], log_path: Path, connection: Redis,
                 timeout: float = 120, cwd: Path | None = None) -> subprocess.Popen:
    """Start a worker `command`; return it once it is registered, its name in `worker_name`."""
    before = worker_names(connection)
    process = spawn(command, env, log_path, cwd)
    try:
        process.worker_name = wait_registered(connection, process, before, timeout, log_path)  # type: ignore[attr-defined]
    except BaseException:
        stop_process(process)
        raise
    return process


def answers(url: str) -> bool:
    """Whether an HTTP server answers `url` at all (an error status is an answer)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def wait_http(url: str, timeout: float = 60, process: subprocess.Popen | None = None,
              log_path: Path | None = None) -> None:
    """Until `url` answers; RuntimeError as soon as `process` (the server) exits instead."""
    def up() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}:\n{log_tail(log_path)}")
        return answers(url)

    wait_for(up, timeout, f"{url} to answer", interval=0.1)


def start_web(env: dict[str, str], log_path: Path, timeout: float = 60, cwd: Path | None = None
              ) -> tuple[subprocess.Popen, str]:
    """`trainhost web` on a free loopback port; returns the process and its base URL once /health answers."""
    port = free_port()
    process = spawn([*trainhost_command(), "web", "--port", str(port)], env, log_path, cwd)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health", timeout, process, log_path)
    except BaseException:
        stop_process(process)
        raise
    return process, base


def stop_process(*processes: subprocess.Popen, timeout: float = 15, descendants: bool = False) -> None:
    """SIGTERM to each process (a worker's warm shutdown, redis-server's AOF flush), SIGKILL to any
    still running `timeout` seconds later (one deadline for all of them). With `descendants`, then
    SIGKILL to every process they had started that is still there: an RQ work horse runs in a
    process group of its own and can outlive its worker."""
    left = _children(processes) if descendants else []
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for child in left:
        _kill(child)


def _children(processes: tuple[subprocess.Popen, ...]) -> list[Any]:
    import psutil  # noqa: PLC0415 - a worker/web dependency, needed only where descendants are stopped

    found: list[Any] = []
    for process in processes:
        try:
            found += psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            pass
    return found


def _kill(child: Any) -> None:
    import psutil  # noqa: PLC0415 - see _children

    try:
        if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
            child.kill()
    except psutil.Error:
        pass
