"""The shell client as a user runs it: `trainhost submit --follow`, `evaluate --follow`, `status`,
`sessions`, and a refused request, against a real Redis and worker."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest

from tests.helpers.fixtures import REPO, strategy_path, strategy_text
from tests.helpers.processes import start_trainhost, stop_process, trainhost_env, wait_for

pytestmark = pytest.mark.integration


def trainhost(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainhost.worker.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def assert_backtest_table(stdout: str) -> None:
    """The metrics table: a header over the two columns, then a row per metric with both values."""
    assert re.search(r"^\s+strategy\s+buy & hold$", stdout, re.MULTILINE), stdout
    for label in ("Sharpe", "max drawdown %", "trades", "win rate", "exposure"):
        assert re.search(rf"^  {re.escape(label)}\s+\S+.*\s\S+$", stdout, re.MULTILINE), label
    trades = re.search(r"^  trades\s+(\S+)\s+(\S+)$", stdout, re.MULTILINE)
    assert trades.group(2) == "1"  # buy-and-hold: one round trip


def test_submit_and_evaluate_follow_to_the_end(redis_server, redis_conn, start_worker, sample_data_dir, tmp_path):
    settings = {"data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models")}
    start_worker(**settings)
    env = trainhost_env(redis_server.url, tmp_path, **settings)

    trained = trainhost(["submit", str(strategy_path("v3_multi_indicator")), "--start", "2017-05-01",
                         "--end", "2018-01-01", "--epochs", "3", "--session-id", "cli-train", "--follow"], env)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "status: completed" in trained.stdout and "majority-class baseline" in trained.stdout
    assert_backtest_table(trained.stdout)  # the training's out-of-sample backtest
    model = re.search(r"^model:\s+(\S+)$", trained.stdout, re.MULTILINE).group(1)

    evaluated = trainhost(["evaluate", model, "--start", "2018-01-01", "--end", "2018-02-07", "--follow"], env)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert "status: completed" in evaluated.stdout and "majority-class baseline" in evaluated.stdout
    assert_backtest_table(evaluated.stdout)
    assert re.search(r"^backtest:\s+[\d,]+ bars 2018-01-01 .* 2018-02-07", evaluated.stdout, re.MULTILINE)
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


def test_the_embedded_redis_is_shared_by_the_host_and_stopped_by_the_process_that_started_it(tmp_path):
    env = trainhost_env("", tmp_path)
    url_file = tmp_path / "var" / "redis.url"
    owner = start_trainhost(["redis"], env, tmp_path / "redis.log")
    try:
        url = wait_for(lambda: url_file.is_file() and url_file.read_text().strip(), 30, "the embedded Redis")
        again = trainhost(["redis"], env)
        assert again.returncode == 0 and f"Redis already available: {url}" in again.stdout, again.stderr
        worker = trainhost(["worker", "--burst"], env)
        assert worker.returncode == 0, worker.stderr
        assert url_file.read_text().strip() == url  # the worker used it and left it running
        owner.send_signal(signal.SIGTERM)
        assert owner.wait(30) == 0
    finally:
        stop_process(owner)
    assert not url_file.exists()
    assert "embedded redis-server stopped" in (tmp_path / "redis.log").read_text()
