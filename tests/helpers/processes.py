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


def heavy_imports(modules: list[str], heavy: tuple[str, ...] = ("torch", "pandas", "numpy")) -> list[str]:
    """Which of `heavy` a fresh interpreter has loaded after importing `modules` (what the light client,
    the producer and the web process, must not pull in)."""
    import json
    import sys

    code = (f"import json, sys, {', '.join(modules)}; "
            f"print(json.dumps([m for m in {list(heavy)!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
