"""The shell client as a user runs it: `trainhost submit --follow`, `evaluate --follow`, `status`,
`sessions`, `experiment --follow`, `experiment-stop`, and refused requests, against a real Redis and worker."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest
import yaml

from tests.helpers.fixtures import REPO, strategy_path, strategy_text
from tests.helpers.processes import start_trainhost, stop_process, trainhost_env, wait_for
from trainhost.jobs import experiments, keys

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


def test_an_experiment_followed_to_the_end_prints_its_table_with_the_best_trial(
        redis_server, redis_conn, start_worker, sample_data_dir, tmp_path):
    settings = {"data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models"),
                "experiments_dir": str(tmp_path / "experiments")}
    start_worker(**settings)
    env = trainhost_env(redis_server.url, tmp_path, **settings)
    followed = trainhost(["experiment", "examples/experiments/grid.yaml", "--follow"], env)
    assert followed.returncode == 0, followed.stdout + followed.stderr
    out = followed.stdout
    experiment_id = re.search(r"^experiment (\w+): experiment of 4 sessions queued", out, re.MULTILINE).group(1)
    assert re.search(rf"^experiment {experiment_id} \(.*\): completed, 4/4 sessions ended", out, re.MULTILINE)
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("trial"))
    assert re.split(r"\s{2,}", lines[header]) == ["trial", "learning_rate", "dropout", "status", "objective",
                                                  "val acc", "val loss"]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[header + 1:header + 5]]
    assert [row[1:4] for row in rows] == [[lr, dropout, "completed"] for lr in ("0.001", "0.01")
                                          for dropout in ("0.1", "0.3")]
    view = experiments.get_experiment(redis_conn, experiment_id)
    best = view["best"]["trial"]
    assert [row[0] for row in rows] == [f"*{t}" if t == best else str(t) for t in range(4)]
    assert [float(row[4]) for row in rows] == pytest.approx([r["objective"] for r in view["rows"]], abs=5e-5)
    assert re.search(rf"^best: trial {best} \(learning_rate=", out, re.MULTILINE)
    assert f"folder: {tmp_path / 'experiments' / experiment_id}" in out
    wait_for(lambda: (tmp_path / "experiments" / experiment_id / "rows.json").is_file(), 10, "rows.json")
    assert "4/4" in followed.stderr  # the progress bar ended full


@pytest.mark.parametrize(("name", "sessions"), [("grid", 4), ("walk_forward", 3), ("sweep_walk_forward", 6),
                                                ("ktrdr_squad", 27)])
def test_every_example_experiment_is_accepted(redis_server, redis_conn, sample_data_dir, tmp_path, name, sessions):
    env = trainhost_env(redis_server.url, tmp_path, data_dir=str(sample_data_dir))
    submitted = trainhost(["experiment", f"examples/experiments/{name}.yaml"], env)
    assert submitted.returncode == 0, submitted.stderr
    assert f"experiment of {sessions} sessions queued" in submitted.stdout
    assert redis_conn.zcard(keys.experiments_key()) == 1


def test_a_refused_experiment_names_its_trial_and_path_and_enqueues_nothing(redis_server, redis_conn,
                                                                            sample_data_dir, tmp_path):
    request = yaml.safe_load((REPO / "examples" / "experiments" / "grid.yaml").read_text())
    request["base"]["strategy_file"] = str(strategy_path("v3_multi_indicator"))
    request["sweep"]["params"] = {"model.architecture.dropout": [0.2, 1.5]}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(request))
    env = trainhost_env(redis_server.url, tmp_path, data_dir=str(sample_data_dir))
    refused = trainhost(["experiment", str(tmp_path / "broken.yaml"), "--follow"], env)
    assert refused.returncode != 0
    assert refused.stderr.startswith("error (422 invalid_strategy): trial 1 (model.architecture.dropout=1.5): ")
    assert "model.architecture.dropout: must be less than 1" in refused.stderr, refused.stderr
    assert not redis_conn.keys("rq:job:*") and not redis_conn.keys("trainhost:experiment*")


def test_ctrl_c_leaves_the_experiment_running_and_experiment_stop_stops_it(redis_server, redis_conn,
                                                                           sample_data_dir, tmp_path):
    request = yaml.safe_load((REPO / "examples" / "experiments" / "grid.yaml").read_text())
    request["base"]["strategy_file"] = str(strategy_path("v3_multi_indicator"))
    request.update(experiment_id="cli-detach", sweep={"params": {"training.learning_rate": [0.001, 0.01]}})
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(request))
    env = trainhost_env(redis_server.url, tmp_path, data_dir=str(sample_data_dir))
    log = tmp_path / "follow.log"
    with open(log, "w") as output:  # no worker: the experiment stays queued
        following = subprocess.Popen([sys.executable, "-m", "trainhost.worker.cli", "experiment",
                                      str(tmp_path / "two.yaml"), "--follow"], cwd=REPO, env=env, stdout=output,
                                     stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "0/2" in log.read_text(), 60, "the experiment's progress bar")
        following.send_signal(signal.SIGINT)
        assert following.wait(30) == 1
    finally:
        stop_process(following)
    assert ("detached; experiment cli-detach goes on. Stop it with: trainhost experiment-stop cli-detach "
            "(or POST /experiments/cli-detach/stop)") in log.read_text()
    assert experiments.get_experiment(redis_conn, "cli-detach")["status"] == "queued"
    stopped = trainhost(["experiment-stop", "cli-detach"], env)
    assert stopped.returncode == 0, stopped.stderr
    assert "experiment cli-detach: stopping, 2 session(s) asked to stop" in stopped.stdout
    assert experiments.get_experiment(redis_conn, "cli-detach")["children"]["by_status"] == {"cancelled": 2}
