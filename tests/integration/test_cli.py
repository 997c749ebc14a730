"""The shell client as a user runs it: `trainhost submit --follow`, `evaluate --follow`, `status`,
`sessions`, and a refused request, against a real Redis and worker."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.helpers.fixtures import REPO, strategy_path, strategy_text
from tests.helpers.processes import trainhost_env

pytestmark = pytest.mark.integration


def trainhost(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainhost.worker.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_submit_and_evaluate_follow_to_the_end(redis_server, redis_conn, start_worker, sample_data_dir, tmp_path):
    settings = {"data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models")}
    start_worker(**settings)
    env = trainhost_env(redis_server.url, tmp_path, **settings)

    trained = trainhost(["submit", str(strategy_path("v3_multi_indicator")), "--start", "2017-05-01",
                         "--end", "2018-01-01", "--epochs", "3", "--session-id", "cli-train", "--follow"], env)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "status: completed" in trained.stdout and "test accuracy" in trained.stdout
    model = re.search(r"^model:\s+(\S+)$", trained.stdout, re.MULTILINE).group(1)

    evaluated = trainhost(["evaluate", model, "--start", "2018-01-01", "--end", "2018-02-07", "--follow"], env)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert "status: completed" in evaluated.stdout and "test accuracy" in evaluated.stdout
    assert "100%" in evaluated.stderr  # the bar ends full, though an evaluation reports no percentage

    status = trainhost(["status", "cli-train"], env)
    assert json.loads(status.stdout)["status"] == "completed"
    listed = trainhost(["sessions"], env).stdout
    assert re.search(r"^cli-train\s+training\s+completed", listed, re.MULTILINE) and "2 session(s)" in listed


def test_a_refused_request_names_the_field_and_exits_non_zero(redis_server, redis_conn, sample_data_dir, tmp_path):
    strategy = tmp_path / "broken.yaml"
    strategy.write_text(strategy_text("v3_multi_indicator").replace("period: 14", "period: -14", 1))
    env = trainhost_env(redis_server.url, tmp_path, data_dir=str(sample_data_dir))
    refused = trainhost(["submit", str(strategy)], env)
    assert refused.returncode != 0
    assert "period" in refused.stderr + refused.stdout
    assert not redis_conn.keys("rq:job:*")
