"""Every KTRDR fixture strategy trains end to end through the HTTP API, and every trained model
evaluates: real redis-server, one real worker, a real web process.

Data root (one for all ten): the real EURUSD 1h sample bars; 4h and 1d are resampled from them by
the pipeline (no files); for experiment_h003_lstm ([5m, 1h], base 1h) a seeded synthetic
EURUSD_5m.csv, built by splitting every real 1h bar into twelve 5m bars that resample back to it
exactly, so the 5m and 1h files agree. Dates are overridden to the sample data, epochs to 2-3.
The per-fixture test metrics and their baselines are printed (run with -s to see them) and written
to fixture_metrics.json in the test's folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests

from tests.helpers.fixtures import STRATEGY_NAMES, strategy_text
from tests.helpers.processes import start_web, stop_process, wait_for
from tests.helpers.synthetic import subdivide_bars, write_bars
from trainhost.jobs.pipeline.artifacts import load_model
from trainhost.jobs.pipeline.data import load_ohlcv

pytestmark = pytest.mark.integration
DATES = {"start_date": "2017-05-01", "end_date": "2018-02-07"}
FIXTURES = list(STRATEGY_NAMES)
EPOCHS = {"experiment_h003_lstm": 2}  # the rest: 3
KINDS = {"experiment_h003_lstm": ("lstm", "classification", 3), "regression_example_v3": ("mlp", "regression", 1),
         "regime_classifier_seed_v1": ("mlp", "classification", 4)}


@pytest.fixture
def data_root(sample_data_dir, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(sample_data_dir / "EURUSD_1h.csv", root)
    hourly = load_ohlcv(sample_data_dir, "EURUSD", "1h", DATES["start_date"], DATES["end_date"])
    write_bars(subdivide_bars(hourly, 12, seed=2017), root / "EURUSD_5m.csv")
    return root


@pytest.fixture
def api(redis_server, redis_conn, start_worker, data_root, tmp_path, monkeypatch):
    """A web process and one worker sharing the data root above and a models folder."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # small models: one thread each, no OpenMP spinning on a shared CPU
    settings = {"data_dir": str(data_root), "models_dir": str(tmp_path / "models")}
    web, base = start_web(redis_server.url, tmp_path, **settings)
    start_worker(**settings)
    yield base
    stop_process(web)


def finished(base: str, session_id: str) -> dict | None:
    status = requests.get(f"{base}/training/status/{session_id}", timeout=10).json()
    return status if status["status"] in ("completed", "failed", "stopped", "cancelled") else None


def baseline_line(name: str, task: str, metrics: dict) -> str:
    if task == "regression":
        return (f"{name:28s} sign acc {metrics['test_accuracy']:.3f} (majority sign "
                f"{metrics['majority_baseline_accuracy']:.3f}, zero {metrics['zero_baseline_accuracy']:.3f}); "
                f"Huber(1) {metrics['test_loss']:.3g} vs zero {metrics['zero_baseline_loss']:.3g}; "
                f"MAE {metrics['mae']:.3g} vs zero {metrics['zero_baseline_mae']:.3g}")
    return (f"{name:28s} accuracy {metrics['test_accuracy']:.3f} vs majority class "
            f"{metrics['majority_baseline_accuracy']:.3f}; weighted F1 {metrics['f1_score']:.3f}; "
            f"n={metrics['n_samples']}")


def test_every_fixture_trains_through_the_api_and_its_model_evaluates(api, tmp_path):
    assert len(FIXTURES) == 10
    sessions = {}
    for name in FIXTURES:  # all submitted at once; the one worker runs them in turn
        response = requests.post(f"{api}/training/start", json={
            "task_id": f"fixture-{name.replace('_', '-')}", "strategy_yaml": strategy_text(name), **DATES,
            "epochs": EPOCHS.get(name, 3)}, timeout=30)
        assert response.status_code == 202, (name, response.text)
        sessions[name] = response.json()["session_id"]

    results, table = {}, []
    for name, session_id in sessions.items():
        status = wait_for(lambda session_id=session_id: finished(api, session_id), 240, f"{name} to finish",
                          interval=0.2)
        assert status["status"] == "completed", (name, status.get("error"))
        result = requests.get(f"{api}/training/result/{session_id}", timeout=10).json()
        kind, task, outputs = KINDS.get(name, ("mlp", "classification", 3))
        assert (result["model"]["type"], result["task"], result["model"]["output_size"]) == (kind, task, outputs)
        assert result["training_metrics"]["epochs_trained"] == EPOCHS.get(name, 3)
        predictor = load_model(result["model_path"])
        assert predictor.feature_names == result["features"]
        v3 = json.loads((Path(result["model_path"]) / "metadata_v3.json").read_text())
        assert v3["resolved_features"] == result["features"] and v3["model_type"] == kind
        results[name] = result
        table.append(baseline_line(name, task, result["test_metrics"]))

    sources = results["v3_multi_timeframe"]["data"]["per_symbol"]["EURUSD"]["timeframe_sources"]
    assert sources == {"1h": "file", "4h": "resampled from 1h", "1d": "resampled from 1h"}
    lstm_sources = results["experiment_h003_lstm"]["data"]["per_symbol"]["EURUSD"]["timeframe_sources"]
    assert lstm_sources == {"1h": "file", "5m": "file"}
    assert results["regression_example_v3"]["test_metrics"]["zero_baseline_mae"] > 0

    evaluations = {}
    for name, result in results.items():  # every model kind evaluates on a later range
        response = requests.post(f"{api}/training/evaluate", json={
            "model_path": result["model_path"], "start_date": "2017-12-01", "end_date": "2018-02-07"}, timeout=10)
        assert response.status_code == 202, (name, response.text)
        evaluations[name] = response.json()["session_id"]
    for name, session_id in evaluations.items():
        status = wait_for(lambda session_id=session_id: finished(api, session_id), 120, f"{name} evaluation",
                          interval=0.2)
        assert status["status"] == "completed", (name, status.get("error"))
        metrics = status["result"]["metrics"]
        assert metrics["n_samples"] == status["result"]["data"]["usable_bars"] > 200, name

    report = "\n".join(table)
    print("\n" + report)
    (tmp_path / "fixture_metrics.json").write_text(json.dumps(
        {name: {"task": r["task"], "split_sizes": r["data"]["split_sizes"], "test_metrics": r["test_metrics"]}
         for name, r in results.items()}, indent=2))


def test_what_is_not_supported_is_refused_at_submission(api):
    text = strategy_text("v3_minimal").replace("indicators:\n", "context_data:\n- {provider: fred, series: [DGS10]}\n"
                                               "indicators:\n", 1)
    response = requests.post(f"{api}/training/start", json={"strategy_yaml": text, **DATES}, timeout=10)
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "context_data: context_data is not supported yet" in message
