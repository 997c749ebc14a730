"""Real processes for integration tests: the worker and the web app as `trainhost` runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]


def trainhost_env(redis_url: str, tmp: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINHOST_")}
    env.update(
        PYTHONPATH=str(REPO),
        TRAINHOST_REDIS_URL=redis_url,
        TRAINHOST_LOGS_DIR=str(tmp / "logs"),
        TRAINHOST_VAR_DIR=str(tmp / "var"),
        TRAINHOST_EXTRA_JOB_FUNCTIONS="tests.helpers.jobs.tiny_job,tests.helpers.jobs.sleepy_job",
    )
    env.update({f"TRAINHOST_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def start_trainhost(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "trainhost.worker.cli", *args], cwd=REPO, env=env,
        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_http(url: str, timeout: float = 20) -> None:
    def answers():
        try:
            return requests.get(url, timeout=1).status_code < 600
        except requests.RequestException:
            return False

    wait_for(answers, timeout, f"{url} to answer")


def start_web(redis_url: str, tmp: Path, **settings: str) -> tuple[subprocess.Popen, str]:
    """`trainhost web` on a free port; returns the process and its base URL once /health answers."""
    from trainhost.worker.redis_server import free_port

    port = free_port()
    web = start_trainhost(["web", "--port", str(port)], trainhost_env(redis_url, tmp, **settings), tmp / "web.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health")
    return web, url


def stop_process(process: subprocess.Popen, timeout: float = 15) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
