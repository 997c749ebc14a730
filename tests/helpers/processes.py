"""Real processes for integration tests: the worker and the web app as `trainhost` runs them, started,
awaited and stopped through the product's own `trainhost.worker.processes` (as the benchmarks do)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from trainhost.worker import processes
from trainhost.worker.processes import stop_process, trainhost_command, wait_for, wait_http

__all__ = ["REPO", "start_trainhost", "start_web", "stop_process", "trainhost_env", "wait_for", "wait_http"]

REPO = Path(__file__).resolve().parents[2]
TEST_JOBS = "tests.helpers.jobs.tiny_job,tests.helpers.jobs.sleepy_job"


def trainhost_env(redis_url: str, tmp: Path, **settings: str) -> dict[str, str]:
    """The environment of a `trainhost` process under test: on `redis_url`, logs and var_dir in `tmp`,
    the test jobs allowed, this repository importable."""
    settings = {"extra_job_functions": TEST_JOBS, **settings}
    return {**processes.isolated_env(redis_url, tmp, **settings), "PYTHONPATH": str(REPO)}


def start_trainhost(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    return processes.spawn([*trainhost_command(), *args], env, log_path, cwd=REPO)


def start_web(redis_url: str, tmp: Path, **settings: str) -> tuple[subprocess.Popen, str]:
    """`trainhost web` on a free port; returns the process and its base URL once /health answers."""
    return processes.start_web(trainhost_env(redis_url, tmp, **settings), tmp / "web.log", cwd=REPO)
