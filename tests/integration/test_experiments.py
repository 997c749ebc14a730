"""Experiments through the HTTP API: real redis-server, real worker and web processes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import psutil
import pytest
import requests

from tests.helpers.fixtures import strategy_text
from tests.helpers.processes import wait_for
from tests.integration.conftest import EXPERIMENT_DATES as DATES
from tests.integration.conftest import EXPERIMENTS_AUTH as AUTH

pytestmark = pytest.mark.integration


def test_a_grid_ends_with_every_row_and_the_best_trial_chosen_on_validation(lab):
    lab.worker()
    response = lab.submit(sweep={"params": {"training.learning_rate": [0.001, 0.01],
                                            "model.architecture.dropout": [0.1, 0.3]}},
                          objective={"metric": "val_accuracy", "direction": "maximize"})
    assert response.status_code == 202, response.text
    assert response.json()["sessions"] == 4
    done = lab.wait(response.json()["experiment_id"], {"completed"})
    rows = done["rows"]
    assert [row["status"] for row in rows] == ["completed"] * 4 and done["children"]["done"] == 4
    assert [row["params"] for row in rows] == [
        {"training.learning_rate": lr, "model.architecture.dropout": dropout}
        for lr in (0.001, 0.01) for dropout in (0.1, 0.3)]
    best = max(rows, key=lambda row: row["objective"])
    assert done["best"]["trial"] == best["trial"] and done["best"]["objective"] == best["objective"]
    assert all(row["objective"] == row["validation"]["val_accuracy"] for row in rows)
    assert done["best"]["test_backtest"]["trade_count"] >= 0  # the test split is reported for the chosen one
    child = requests.get(f"{lab.url}/training/status/{best['sessions'][0]}", timeout=10).json()
    assert child["experiment"] == {"experiment_id": done["experiment_id"], "trial": best["trial"], "fold": None}
    listed = requests.get(f"{lab.url}/experiments", timeout=10).json()["experiments"]
    assert [e["experiment_id"] for e in listed] == [done["experiment_id"]]
    assert response.json()["children"] == [row["session_id"] for row in rows]
    assert done["kind"] == "sweep" and done["walk_forward"] is None
    assert done["progress"] == {"done": 4, "total": 4, "eta_seconds": 0.0}
    assert all(row["metrics"] == row["validation"] and row["fold"] is None for row in rows)

    deleted = requests.delete(f"{lab.url}/experiments/{done['experiment_id']}", headers=AUTH, timeout=10)
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert requests.get(f"{lab.url}/experiments/{done['experiment_id']}", timeout=10).status_code == 404
    assert requests.get(f"{lab.url}/training/status/{best['session_id']}", timeout=10).status_code == 200


def test_a_walk_forward_stitches_its_test_windows_into_one_out_of_sample_curve(lab):
    lab.worker()
    response = lab.submit(walk_forward={"train": 2000, "test": 800, "gap": 20}, objective={"metric": "oos.sharpe"})
    assert response.status_code == 202, response.text
    assert response.json()["folds"] == 3
    done = lab.wait(response.json()["experiment_id"], {"completed"})
    folds = done["folds"]
    assert [f["test_bars"] for f in folds] == [800] * 3
    assert all(a["test_end"] < b["test_start"] for a, b in zip(folds, folds[1:], strict=False))  # no overlap
    assert all(f["train_end"] < f["test_start"] for f in folds)  # the gap in between
    curve = requests.get(f"{lab.url}/experiments/{done['experiment_id']}/equity",
                         params={"trial": 0, "points": 10000}, timeout=10).json()
    assert curve["total_points"] == sum(f["test_bars"] for f in folds) == len(curve["points"])
    times = pd.DatetimeIndex([p["time"] for p in curve["points"]])
    assert times.is_monotonic_increasing and times.is_unique

    # Independently: chain the folds' own equity files, then the return and the drawdown by hand.
    row = done["rows"][0]
    results = [requests.get(f"{lab.url}/training/result/{sid}", timeout=10).json() for sid in row["sessions"]]
    initial = results[0]["backtest"]["config"]["initial_capital"]
    level, chained = initial, []
    for result in results:
        equity = requests.get(f"{lab.url}/training/result/{result['session_id']}/equity",
                              params={"points": 10000}, timeout=10).json()["points"]
        values = np.array([p["equity"] for p in equity]) * level / initial
        chained.append(values)
        level = values[-1]
    chained = np.concatenate(chained)
    np.testing.assert_allclose([p["equity"] for p in curve["points"]], chained, rtol=1e-9)
    oos = row["oos"]
    assert oos["total_return"] == pytest.approx(chained[-1] - initial, rel=1e-9)
    peak = np.maximum.accumulate(np.concatenate([[initial], chained]))
    assert oos["max_drawdown_pct"] == pytest.approx(np.max(1 - np.concatenate([[initial], chained]) / peak), rel=1e-9)
    assert row["objective"] == oos["sharpe"] and done["best"]["trial"] == 0
    assert done["kind"] == "walk_forward" and done["walk_forward"] == {"folds": folds, "metrics": oos}


def test_an_invalid_variant_is_refused_naming_its_trial_and_path(lab, redis_conn):
    response = lab.submit(sweep={"params": {"model.architecture.dropout": [0.2, 1.5]}})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "trial 1" in message and "model.architecture.dropout=1.5" in message and "dropout" in message
    assert not redis_conn.keys("rq:job:*") and not redis_conn.keys("trainhost:experiment*")
    unread = lab.submit(sweep={"params": {"model.training.learning_rate": [0.001, 0.01]}})  # KTRDR's nested spot
    assert unread.status_code == 422 and "nothing reads this path" in unread.json()["error"]["message"]
    missing = lab.submit(sweep={"params": {"model.nowhere.dropout": [0.2]}})
    assert missing.status_code == 422 and "sweep.params.model.nowhere.dropout" in missing.json()["error"]["message"]
    too_many = lab.submit(sweep={"params": {"training.learning_rate": [0.001] * 3}},
                          walk_forward={"train": 50, "test": 50})
    assert too_many.status_code == 422 and "walk_forward.train" in too_many.json()["error"]["message"]


def test_stop_mid_experiment_leaves_no_child_running(lab):
    lab.worker()
    response = lab.submit(base={"strategy_yaml": strategy_text("v3_multi_indicator"), **DATES, "epochs": 3000},
                          sweep={"params": {"training.learning_rate": [0.001, 0.002, 0.003]}})
    experiment_id = response.json()["experiment_id"]
    lab.wait(experiment_id, {"running"}, timeout=60)
    busy = requests.delete(f"{lab.url}/experiments/{experiment_id}", headers=AUTH, timeout=10)
    assert busy.status_code == 409 and "running" in busy.json()["error"]["message"]
    stopped = requests.post(f"{lab.url}/experiments/{experiment_id}/stop", headers=AUTH, timeout=30)
    assert stopped.status_code == 200, stopped.text
    done = lab.wait(experiment_id, {"stopped"}, timeout=120)
    statuses = [row["status"] for row in done["rows"]]
    assert "running" not in statuses and "queued" not in statuses
    assert set(done["children"]["by_status"]) <= {"stopped", "cancelled"}, done["children"]


def test_a_worker_killed_mid_experiment_still_ends_every_child_decided(lab):
    worker = lab.worker()
    response = lab.submit(base={"strategy_yaml": strategy_text("v3_multi_indicator"), **DATES, "epochs": 12,
                                "batch_size": 4},
                          sweep={"params": {"training.learning_rate": [0.001, 0.002]}})
    experiment_id = response.json()["experiment_id"]
    first = f"{experiment_id}-t0"
    wait_for(lambda: ((requests.get(f"{lab.url}/training/status/{first}", timeout=10).json().get("progress") or {})
                      .get("epoch") or 0) >= 2, 120, "the first trial's second epoch", interval=0.2)
    for process in [*psutil.Process(worker.pid).children(recursive=True), psutil.Process(worker.pid)]:
        process.kill()  # the whole worker is lost, mid-trial
    lab.worker()  # finds the session lost after the grace, resumes it (training retries), runs the rest
    done = lab.wait(experiment_id, {"completed"}, timeout=360)
    assert [row["status"] for row in done["rows"]] == ["completed", "completed"], done["rows"]
    assert done["best"] is not None


def test_its_manifest_re_runs_it_to_the_same_rows(lab, tmp_path):
    lab.worker()
    first = lab.submit(sweep={"params": {"training.learning_rate": [0.001, 0.01]}}).json()["experiment_id"]
    done = lab.wait(first, {"completed"})
    manifest = json.loads((tmp_path / "experiments" / first / "manifest.json").read_text())
    assert set(manifest) >= {"request", "base_strategy", "folds", "data_sha256", "versions"}
    assert manifest["data_sha256"]["EURUSD_1h.csv"] and manifest["versions"]["trainhost"]
    request = {key: value for key, value in manifest["request"].items() if key != "experiment_id"}
    again = requests.post(f"{lab.url}/experiments", json=request, headers=AUTH, timeout=60).json()["experiment_id"]
    redone = lab.wait(again, {"completed"})
    assert [(r["params"], r["objective"], r["validation"]) for r in redone["rows"]] == [
        (r["params"], r["objective"], r["validation"]) for r in done["rows"]]
