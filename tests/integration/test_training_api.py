"""Training and evaluation through the HTTP API: real redis-server, real worker and web processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
import requests
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.helpers.fixtures import KTRDR_MODEL, ktrdr_backtest_frame, strategy_text
from tests.helpers.processes import start_web, stop_process, wait_for
from trainhost.jobs.pipeline.artifacts import load_model

pytestmark = pytest.mark.integration
DATES = {"start_date": "2017-05-01", "end_date": "2018-02-07"}


@pytest.fixture
def stack(redis_server, redis_conn, start_worker, sample_data_dir, tmp_path):
    """A web process and a way to start workers, sharing one Redis, data root and models dir."""
    settings = {"data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models"), "stop_grace_seconds": "5"}
    web, base = start_web(redis_server.url, tmp_path, **settings)

    class Stack:
        url = base
        models_dir = tmp_path / "models"

        @staticmethod
        def worker(*args):
            return start_worker(*args, **settings)

        @staticmethod
        def start(strategy="v3_multi_indicator", **body):
            payload = {"strategy_yaml": strategy_text(strategy), **DATES, **body}
            response = requests.post(f"{base}/training/start", json=payload, timeout=30)
            assert response.status_code == 202, response.text
            return response.json()["session_id"]

        @staticmethod
        def status(session_id):
            return requests.get(f"{base}/training/status/{session_id}", timeout=10).json()

        @staticmethod
        def wait_status(session_id, statuses, timeout=120):
            return wait_for(lambda: (s := Stack.status(session_id))["status"] in statuses and s, timeout,
                            f"{session_id} to reach {statuses}", interval=0.1)

    yield Stack
    stop_process(web)


def test_training_runs_to_completed_with_live_progress(stack, redis_conn):
    stack.worker()
    # Long enough (about 2 s here) for several of the reporter's half-second writes to land mid-training.
    session_id = stack.start(task_id="ktrdr-task-1", epochs=40)
    assert session_id == "ktrdr-task-1"
    seen_phases, seen_epochs = set(), set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = stack.status(session_id)
        seen_phases.add(status["phase"])
        seen_epochs.add((status.get("progress") or {}).get("epoch"))
        if status["status"] in ("completed", "failed"):
            break
        time.sleep(0.05)
    assert status["status"] == "completed", status
    assert {"training", "done"} <= seen_phases
    assert len(seen_epochs - {None, 0}) >= 2  # the epoch advanced while we watched
    assert status["device"]["type"] == "cpu"
    assert status["metrics"]["current"]["val_accuracy"] is not None
    result = requests.get(f"{stack.url}/training/result/{session_id}", timeout=10).json()
    assert result["training_metrics"]["epochs_trained"] == 40
    assert 0 <= result["test_metrics"]["test_accuracy"] <= 1
    assert "majority_baseline_accuracy" in result["test_metrics"]
    predictor = load_model(result["model_path"])
    assert predictor.metadata["features"] == result["features"]
    history = requests.get(f"{stack.url}/training/sessions/{session_id}/history", timeout=10).json()["history"]
    assert [h["epoch"] for h in history] == list(range(1, 41))


def test_stop_mid_training_gives_stopped_and_a_loadable_partial_model(stack):
    stack.worker()
    session_id = stack.start(epochs=500)
    wait_for(lambda: (stack.status(session_id).get("progress") or {}).get("epoch", 0) >= 2, 120, "epoch 2")
    asked = time.monotonic()
    response = requests.post(f"{stack.url}/training/stop", json={"session_id": session_id}, timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "stopping"
    status = stack.wait_status(session_id, {"stopped", "failed", "completed"}, timeout=30)
    assert status["status"] == "stopped", status
    assert time.monotonic() - asked < 10
    assert status["result"]["stopped"] is True
    predictor = load_model(status["result"]["model_path"])
    assert predictor.metadata["status"] == "stopped"


def test_stopping_a_queued_session_cancels_it(stack):
    session_id = stack.start(epochs=1)  # no worker yet: it stays queued
    response = requests.post(f"{stack.url}/training/stop", json={"session_id": session_id}, timeout=10)
    assert response.json()["status"] == "cancelled"
    assert stack.status(session_id)["status"] == "cancelled"


def test_sessions_run_one_at_a_time_in_submission_order(stack, redis_conn):
    ids = [stack.start(epochs=2) for _ in range(3)]
    stack.worker()
    for session_id in ids:
        assert stack.wait_status(session_id, {"completed", "failed"})["status"] == "completed"
    jobs = [Job.fetch(i, connection=redis_conn, serializer=JSONSerializer) for i in ids]
    for earlier, later in zip(jobs, jobs[1:], strict=False):
        assert earlier.ended_at <= later.started_at
    listing = requests.get(f"{stack.url}/training/sessions", timeout=10).json()
    assert [s["session_id"] for s in listing["sessions"]] == ids[::-1]  # newest first
    assert listing["total"] == 3


def test_two_workers_share_the_queue_and_no_session_runs_twice(stack, redis_conn):
    ids = [stack.start(epochs=2) for _ in range(4)]
    first, second = stack.worker(), stack.worker()
    for session_id in ids:
        assert stack.wait_status(session_id, {"completed", "failed"})["status"] == "completed"
    workers = [Job.fetch(i, connection=redis_conn, serializer=JSONSerializer).worker_name for i in ids]
    assert set(workers) <= {first.worker_name, second.worker_name}
    for session_id in ids:  # exactly one execution each: one epoch-1 record in each history
        history = requests.get(f"{stack.url}/training/sessions/{session_id}/history", timeout=10).json()
        assert [h["epoch"] for h in history["history"]] == [1, 2]


def test_evaluation_of_a_trained_model(stack):
    stack.worker()
    session_id = stack.start(epochs=2)
    model_path = stack.wait_status(session_id, {"completed"})["result"]["model_path"]
    response = requests.post(f"{stack.url}/training/evaluate", json={
        "model_path": model_path, "symbol": "EURUSD", "timeframe": "1h",
        "start_date": "2017-11-01", "end_date": "2018-02-07"}, timeout=10)
    assert response.status_code == 202, response.text
    evaluation = stack.wait_status(response.json()["session_id"], {"completed", "failed"})
    assert evaluation["status"] == "completed", evaluation
    metrics = evaluation["result"]["metrics"]
    assert set(metrics) >= {"test_accuracy", "precision", "recall", "f1_score", "confusion_matrix",
                            "majority_baseline_accuracy"}
    assert sum(map(sum, metrics["confusion_matrix"])) == evaluation["result"]["data"]["usable_bars"]


def test_training_and_evaluation_results_carry_a_backtest_served_page_by_page(stack):
    stack.worker()
    session_id = stack.start(epochs=2, backtest={"allow_short_from_flat": True, "confidence_threshold": 0.4})
    trained = stack.wait_status(session_id, {"completed", "failed"})
    assert trained["status"] == "completed", trained
    backtest = trained["result"]["backtest"]
    assert backtest["config"]["allow_short_from_flat"] is True and backtest["config"]["confidence_threshold"] == 0.4
    assert backtest["first_bar"] >= trained["result"]["data"]["test_range"][0]  # out of sample: the test split
    response = requests.post(f"{stack.url}/training/evaluate", json={
        "model_path": trained["result"]["model_path"], "start_date": "2018-01-01", "end_date": "2018-02-07",
        "backtest": {"commission": 0.0, "slippage": 0.0}}, timeout=10)
    assert response.status_code == 202, response.text
    evaluation = stack.wait_status(response.json()["session_id"], {"completed", "failed"})
    assert evaluation["status"] == "completed", evaluation
    result = evaluation["result"]["backtest"]
    assert result["config"]["commission"] == 0.0 and result["first_bar"].startswith("2018-01-01")
    assert result["last_bar"].startswith("2018-02-07")  # the end date's whole day
    assert set(result["metrics"]) >= {"sharpe", "sortino", "calmar", "max_drawdown_pct", "win_rate", "exposure"}
    for sid, summary in ((session_id, backtest), (evaluation["session_id"], result)):
        url = f"{stack.url}/training/result/{sid}"
        trades = requests.get(f"{url}/trades", params={"limit": 2}, timeout=10).json()
        assert trades["total"] == summary["metrics"]["trade_count"] and len(trades["trades"]) <= 2
        curve = requests.get(f"{url}/equity", params={"points": 50}, timeout=10).json()
        assert curve["total_points"] == summary["bars"] and len(curve["points"]) <= 50
        assert curve["points"][-1]["equity"] == pytest.approx(summary["config"]["initial_capital"]
                                                              + summary["metrics"]["total_return"])
    assert requests.get(f"{stack.url}/training/result/{session_id}/equity", params={"points": 1},
                        timeout=10).status_code == 422


def test_delete_and_unknown_ids(stack):
    assert requests.get(f"{stack.url}/training/status/nope", timeout=10).status_code == 404
    assert requests.delete(f"{stack.url}/training/sessions/nope", timeout=10).status_code == 404
    stack.worker()
    long_id = stack.start(epochs=500)
    stack.wait_status(long_id, {"running"})
    assert requests.delete(f"{stack.url}/training/sessions/{long_id}", timeout=10).status_code == 409
    requests.post(f"{stack.url}/training/stop", json={"session_id": long_id}, timeout=10)
    stack.wait_status(long_id, {"stopped"})
    assert requests.delete(f"{stack.url}/training/sessions/{long_id}", timeout=10).status_code == 200
    assert requests.get(f"{stack.url}/training/status/{long_id}", timeout=10).status_code == 404


def test_duplicate_id_and_bad_requests_enqueue_nothing(stack, redis_conn):
    stack.start(task_id="same", epochs=1)
    again = requests.post(f"{stack.url}/training/start",
                          json={"task_id": "same", "strategy_yaml": strategy_text("v3_minimal"), **DATES}, timeout=10)
    assert again.status_code == 409
    before = redis_conn.llen("rq:queue:training")
    bad = requests.post(f"{stack.url}/training/start", json={"strategy_yaml": "name: x\n", **DATES}, timeout=10)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_strategy"
    missing = requests.post(f"{stack.url}/training/start",
                            json={"strategy_yaml": strategy_text("v3_minimal"), "symbols": ["GBPUSD"]}, timeout=10)
    assert missing.status_code == 422 and "GBPUSD_1h.csv" in missing.json()["error"]["message"]
    assert redis_conn.llen("rq:queue:training") == before


def test_rq_tools_see_our_jobs_and_meta(stack, redis_server, redis_conn):
    worker = stack.worker()
    session_id = stack.start(epochs=2)
    stack.wait_status(session_id, {"completed"})
    job = Job.fetch(session_id, connection=redis_conn, serializer=JSONSerializer)
    assert job.meta["kind"] == "training" and job.meta["phase"] == "done"
    info = subprocess.run([sys.executable, "-m", "rq.cli", "info", "--url", redis_server.url, "--serializer",
                           "rq.serializers.JSONSerializer"], capture_output=True, text=True, timeout=30)
    assert worker.worker_name in info.stdout and "training" in info.stdout, info.stdout + info.stderr
    json.dumps(job.meta)  # JSON all the way


def test_a_ktrdr_model_folder_is_evaluated_and_backtested_as_it_is(stack):
    """KTRDR's own folder (no COMPLETE marker; its state dict, config.json, metadata_v3.json) through
    the API: the backtest's trades are the ones KTRDR's engine recorded for these bars."""
    shutil.copytree(KTRDR_MODEL, stack.models_dir / "ktrdr" / "v3_multi_indicator")
    stack.worker()
    response = requests.post(f"{stack.url}/training/evaluate", json={
        "model_path": "ktrdr/v3_multi_indicator", "start_date": "2018-01-04", "end_date": "2018-02-07"}, timeout=10)
    assert response.status_code == 202, response.text
    evaluation = stack.wait_status(response.json()["session_id"], {"completed", "failed"})
    assert evaluation["status"] == "completed", evaluation
    assert evaluation["result"]["metrics"]["n_samples"] > 0
    trades = requests.get(f"{stack.url}/training/result/{evaluation['session_id']}/trades", timeout=10).json()
    theirs = ktrdr_backtest_frame("jan2018", "trades")
    assert [(t["side"], t["entry_time"], t["exit_time"], t["quantity"]) for t in trades["trades"]] == list(
        theirs[["side", "entry_time", "exit_time", "quantity"]].itertuples(index=False, name=None))
